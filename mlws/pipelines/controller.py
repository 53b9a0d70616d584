"""The pipeline controller: the detached process that runs one pipeline's graph to its end
(``python -m mlws.pipelines.controller <workspace> <run id>``; the protocol it shares with the
sweep controller -- claim, reconcile on death, cancel -- is :mod:`mlws.controllers`).

It reads the graph from the pipeline run's definition and loops:

1. **Watch** the step runs it started: a step that completed has its ``PipelineData`` outputs
   turned into manifests (from its run files) for the steps that read them, and its fingerprint
   recorded (:mod:`.reuse`); a step that failed or was canceled fails the pipeline: the open
   steps are canceled and no more are started -- unless ``continue_on_step_failure``, where
   only the steps downstream of it are left out and the independent branches finish.
2. **Start** every step whose upstream steps have all completed: it is either *reused* (its
   fingerprint matches an earlier completed step, ``allow_reuse`` and no
   ``regenerate_outputs``: recorded as completed at once, no process started) or submitted
   as a child run (``azureml.StepRun``) through ``submit_script`` on its own compute target,
   which admits it when it has a free slot; so independent steps run at the same time. On a
   ``local`` target no more than its slots plus :data:`QUEUE_AHEAD` steps are open at once:
   the rest are held here rather than waiting ``Queued`` in supervisors of their own, whose
   polling for a slot took CPU from the steps running on a small machine.
3. **End** when no step is open and none can start: ``Completed`` when every step completed,
   else ``Failed`` naming the first failed step; ``Canceled`` when the pipeline was canceled
   (its open steps are canceled first). The controller's log is the run file
   ``azureml-logs/pipeline.txt``.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from .. import controllers
from ..lifecycle import TERMINAL
from . import hyperdrive_step, reuse

if TYPE_CHECKING:
    from ..workspace import Workspace

LOG_FILE = "azureml-logs/pipeline.txt"
#: Steps submitted to a ``local`` target beyond its slots: queued there, ready to take a slot
#: the moment one is freed (the oldest waiter looks every few milliseconds).
QUEUE_AHEAD = 1


class PipelineController(controllers.Controller):
    """Drives one pipeline run (see the module docstring)."""

    LOG_FILE = LOG_FILE
    ERROR_CODE = "PipelineControllerError"

    def __init__(self, ws: Workspace, run_id: str) -> None:
        super().__init__(ws, run_id)
        spec = self.run.get_details()["runDefinition"]["pipeline"]
        self.steps: dict[str, dict[str, Any]] = {s["name"]: s for s in spec["steps"]}
        self.values: dict[str, Any] = spec["parameters"]
        self.keep_going = bool(spec["continueOnStepFailure"])
        self.regenerate = bool(spec["regenerateOutputs"])
        #: step name -> its child run's id, once started (or reused).
        self.started: dict[str, str] = {}
        #: step name -> final status of its run.
        self.ended: dict[str, str] = {}
        #: PipelineData name -> manifest of its files, once its producer completed.
        self.data: dict[str, str] = {}
        #: step name -> fingerprint, for the steps that were run (recorded when they complete).
        self.fingerprints: dict[str, str] = {}
        self.failed: list[str] = []
        #: step name -> why it failed, for steps that failed without a run.
        self.reasons: dict[str, str] = {}
        self.stopping = False
        #: step name -> fingerprint of a step held back (its target's queue was full).
        self.held: dict[str, str] = {}
        #: step name -> its compute target's name.
        self.targets: dict[str, str] = {
            n: s["runConfig"].get("target") or "local" for n, s in self.steps.items()
        }
        #: target name -> how many of this pipeline's steps may be open on it (None: no limit).
        self.limits: dict[str, int | None] = {}

    # -- the loop ----------------------------------------------------------------------------
    def drive(self) -> tuple[str, dict[str, Any] | None]:
        """Run the graph; returns the pipeline's final status and error."""
        while True:
            if self.canceled():
                self.say("the pipeline was canceled: canceling its open steps")
                self.finish_children()
                return "Canceled", None
            self.watch()
            if not self.stopping:
                for name in self.ready():
                    self.start(name)
            open_steps = [n for n in self.started if n not in self.ended]
            if not open_steps and (self.stopping or not self.ready()):
                return self.outcome()
            if not open_steps:
                continue  # steps just reused made more ready
            self.wait_for_change()

    def watch(self) -> None:
        """Take in the steps that have ended since the last look."""
        by_id = {v: k for k, v in self.started.items() if k not in self.ended}
        if not by_id:
            return
        for r in self.children():
            name = by_id.get(r["id"])
            if name is None or r["status"] not in TERMINAL:
                continue
            self.ended[name] = r["status"]
            self.say(f"step {name!r} ({r['id']}) ended {r['status']}")
            if r["status"] == "Completed":
                self.completed(name, r["seq"])
            else:
                self.failed.append(name)
                if not self.keep_going and not self.stopping:
                    self.stopping = True
                    self.say(f"step {name!r} {r['status']}: canceling the open steps")
                    controllers.cancel_children(self.ws, self.run_id)

    def completed(self, name: str, seq: int) -> None:
        """A step completed: its outputs become manifests; a step that ran records its
        fingerprint so that an unchanged later one is reused."""
        for out in self.steps[name]["outputs"]:
            self.data[out] = reuse.output_manifest(self.ws, seq, out)
        fp = self.fingerprints.get(name)
        if fp is not None:
            reuse.record(self.ws, seq, name, fp)

    def ready(self) -> list[str]:
        """Steps not started whose upstream steps have all completed."""
        return [
            n
            for n, s in self.steps.items()
            if n not in self.started
            and all(self.ended.get(u) == "Completed" for u in s["upstream"])
        ]

    def outcome(self) -> tuple[str, dict[str, Any] | None]:
        """Completed when every step completed; else Failed, naming the first failure."""
        if not self.failed and all(self.ended.get(n) == "Completed" for n in self.steps):
            return "Completed", None
        if not self.failed:  # nothing failed, yet steps were left: cannot happen in a DAG
            left = sorted(set(self.steps) - set(self.ended))
            return "Failed", {"code": "StepsNotRun", "message": f"steps never ran: {left}"}
        first = self.failed[0]
        why = self.reasons.get(first)
        if why is None:
            row = self.ws.catalog.one("SELECT error FROM runs WHERE id = ?", (self.started[first],))
            why = json.loads((row and row["error"]) or "{}").get("message", "no reason recorded")
        skipped = sorted(set(self.steps) - set(self.started))
        tail = f"; not run: {', '.join(skipped)}" if skipped else ""
        run = f" ({self.started[first]})" if self.started[first] else ""
        return "Failed", {
            "code": "StepFailed",
            "message": f"step {first!r} {self.ended[first]}{run}: {why}{tail}",
        }

    # -- one step ----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Reuse the step, or submit it as a child run. A step that cannot be started (its
        dataset matches no file now, its environment cannot be resolved) has failed."""
        from ..errors import MlwsError

        step = self.steps[name]
        try:
            fp = self.held.pop(name, None) or self.fingerprint(step)
            original = None
            if step["allowReuse"] and not self.regenerate:
                original = reuse.find_reusable(self.ws, fp)
            if original is not None:
                rid = reuse.reuse(self.ws, self.run.experiment.name, self.run_id, name, original)
                self.say(f"step {name!r} reused {original['id']} as {rid}")
                self.started[name] = rid
                self.ended[name] = "Completed"
                seq = self.ws.catalog.scalar("SELECT seq FROM runs WHERE id = ?", (rid,))
                self.completed(name, seq)
                return
            if self.queue_full(name):
                self.held[name] = fp
                return
            self.fingerprints[name] = fp
            self.open_ssh_workers(step)
            self.started[name] = self.submit(step)
        except MlwsError as e:
            self.started[name] = ""
            self.ended[name] = "Failed"
            self.failed.append(name)
            self.reasons[name] = f"it could not be started: {e}"
            self.say(f"step {name!r} could not be started: {e}")
            if not self.keep_going:
                self.stopping = True
                controllers.cancel_children(self.ws, self.run_id)
            return
        self.say(f"step {name!r} submitted as {self.started[name]}")

    def open_ssh_workers(self, step: dict[str, Any]) -> None:
        """A ParallelRunStep with workers on an ``ssh`` target: open the target's shared
        connections to the hosts it uses here, where the target's key may be read. The step's
        driver is a run's script, which never gets a credential: its sessions ride on these
        (an idle one closes after ssh's ``ControlPersist``, 120 s).

        :raises MlwsError: a host cannot be reached (the step cannot start)."""
        if step.get("stepType") != "ParallelRunStep":
            return
        from ..compute import target_config
        from ..compute.ssh import connection, nodes_of

        settings = json.loads(step["command"][-1])
        target = settings.get("workersTarget")
        if not target:
            return
        kind, config = target_config(self.ws, target)
        if kind != "ssh":
            return
        for node in nodes_of(config)[: settings["nodeCount"]]:
            connection(self.ws, target, config, node).open()

    def queue_full(self, name: str) -> bool:
        """Whether step ``name``'s target has as many of this pipeline's steps open as it may
        (a ``local`` target: its slots plus :data:`QUEUE_AHEAD`; other types: no limit)."""
        from ..compute import target_config

        target = self.targets[name]
        if target not in self.limits:
            kind, _ = target_config(self.ws, target)
            if kind == "local":
                from ..compute.local import max_concurrent_runs

                self.limits[target] = max_concurrent_runs(self.ws) + QUEUE_AHEAD
            else:
                self.limits[target] = None
        limit = self.limits[target]
        if limit is None:
            return False
        open_here = sum(
            1 for n in self.started if n not in self.ended and self.targets.get(n) == target
        )
        return open_here >= limit

    def argument(self, a: Any, step: dict[str, Any]) -> Any:
        """One argument for ``submit_script``: data as an input or output object, a parameter
        as its value, ``$AML_PARAMETER_x`` in text replaced."""
        from ..rundata import RunFilesOutput, StoredInput
        from .data import substitute

        if isinstance(a, str):
            if a.startswith("$AZUREML_DATAREFERENCE_"):
                name = a[len("$AZUREML_DATAREFERENCE_") :]
                if name in step["outputs"] or name in step["dataInputs"]:
                    return self.argument({"data": name}, step)
            return substitute(a, self.values)
        if "param" in a:
            return str(self.values[a["param"]])
        if "data" in a:
            if a["data"] in (step.get("outputConfigs") or {}):
                return self.output_config(a["data"], step["outputConfigs"][a["data"]])
            if a["data"] in step["outputs"]:
                return RunFilesOutput(a["data"])
            tabular = (step.get("tabularInputs") or {}).get(a["data"])
            file = hyperdrive_step.file_output(self.steps.values(), a["data"])
            return StoredInput(a["data"], self.data[a["data"]], tabular, file)
        spec = next(d for d in step["datasets"] if d["name"] == a["dataset"])
        return self.dataset(spec)

    def output_config(self, name: str, spec: dict[str, Any]) -> Any:
        """An ``OutputFileDatasetConfig`` output of a step: written under ``outputs/<name>/``
        (so later steps read it from the run's files, as ``PipelineData``) and uploaded to its
        destination -- and registered -- when the step completes, as by a single run."""
        from ..datastores import Datastore
        from ..rundata import OutputFileDatasetConfig

        store = Datastore(self.ws, spec["datastore"]) if spec["datastore"] else None
        out = OutputFileDatasetConfig(
            name, destination=(store, spec["path"]) if store else None, source=f"outputs/{name}"
        ).as_upload(spec["overwrite"])
        if spec["register"]:
            out = out.register_on_complete(**spec["register"])
        return out

    def dataset(self, spec: dict[str, Any]) -> Any:
        """A dataset input as the run configuration takes it."""
        from ..rundata import DatasetConsumptionConfig, rebuild_dataset

        ds = rebuild_dataset(self.ws, spec["dataset"])
        return DatasetConsumptionConfig(spec["name"], ds, spec["mode"], spec["pathOnCompute"])

    def variables(self, step: dict[str, Any]) -> dict[str, str]:
        """``AML_PARAMETER_<name>`` for the step's ``params`` and the pipeline parameters it
        uses (in its arguments or its command), as v1. Only those: a parameter a step does not
        use must not change its fingerprint."""
        from .data import env_name, substitute

        texts = [a for a in step["arguments"] if isinstance(a, str)]
        texts += [str(step.get("command") or "")] + [
            v for v in step["params"].values() if isinstance(v, str)
        ]
        used = {a["param"] for a in step["arguments"] if isinstance(a, dict) and "param" in a}
        used |= {v["param"] for v in step["params"].values() if isinstance(v, dict)}
        used |= {n for n in self.values if any(f"$AML_PARAMETER_{env_name(n)}" in t for t in texts)}
        out = {f"AML_PARAMETER_{env_name(k)}": str(self.values[k]) for k in sorted(used)}
        for k, v in step["params"].items():
            value = self.values[v["param"]] if isinstance(v, dict) else substitute(v, self.values)
            out[f"AML_PARAMETER_{env_name(k)}"] = str(value)
        return out

    def fingerprint(self, step: dict[str, Any]) -> str:
        """The step's fingerprint (see :mod:`.reuse` for what it covers)."""
        from ..compute import target_config
        from ..runconfig import RunConfiguration, environment_definition

        rc = RunConfiguration.from_dict(step["runConfig"])
        target_type, _ = target_config(self.ws, rc.target)
        args = [
            a if isinstance(a, dict) and "param" not in a else str(self.argument(a, step))
            for a in step["arguments"]
        ]
        env = environment_definition(self.ws, rc.environment, on_this_machine=target_type != "ssh")
        inputs = {d: self.data[d] for d in step["dataInputs"]}
        inputs.update(
            {d["name"]: reuse.dataset_content(self.dataset(d).dataset) for d in step["datasets"]}
        )
        return reuse.fingerprint(
            {
                "name": step["name"],
                "script": step.get("script"),
                "command": step.get("command"),
                "snapshot": step["snapshot"]["manifest"],
                "arguments": args,
                "variables": self.variables(step),
                "environment": env,
                "environmentVariables": rc.environment_variables,
                "targetType": target_type,
                "inputs": inputs,
                "outputs": sorted(step["outputs"]),
                # Only when there are some, so that older fingerprints still match.
                **({"outputConfigs": step["outputConfigs"]} if step.get("outputConfigs") else {}),
                **hyperdrive_step.fingerprint_part(step),
                **({"tabularInputs": step["tabularInputs"]} if step.get("tabularInputs") else {}),
            }
        )

    def submit(self, step: dict[str, Any]) -> str:
        """Submit the step as a child run (``azureml.StepRun``); returns its id."""
        from ..lifecycle import STEP_RUN
        from ..runconfig import RunConfiguration, ScriptRunConfig, submit_script
        from ..snapshots import Snapshot

        rc = RunConfiguration.from_dict(step["runConfig"])
        rc.arguments = [self.argument(a, step) for a in step["arguments"]]
        rc.environment_variables = {**rc.environment_variables, **self.variables(step)}
        if step["outputs"] and not rc.history.output_collection:
            # PipelineData lives in outputs/: without collection the next steps would get nothing.
            self.say(f"step {step['name']!r}: outputs are collected (it writes PipelineData)")
            rc.history.output_collection = True
        in_args = {
            a.get("data") or a.get("dataset") for a in step["arguments"] if isinstance(a, dict)
        }
        data = [
            self.argument({"data": d}, step)
            for d in [*step["dataInputs"], *step["outputs"]]
            if d not in in_args
        ]
        data += [self.dataset(d) for d in step["datasets"] if d["name"] not in in_args]
        cfg = ScriptRunConfig(
            source_directory=step["sourceDirectory"],
            script=step.get("script"),
            command=step.get("command"),
            run_config=rc,
            max_run_duration_seconds=None,
        )
        if step.get("stepType") == hyperdrive_step.STEP_TYPE:  # the step's run is a sweep
            return hyperdrive_step.submit_step(self.run, step, cfg, data)
        run = submit_script(
            self.run.experiment,
            cfg,
            parent_id=self.run_id,
            snapshot=Snapshot(**step["snapshot"]),
            run_type=STEP_RUN,
            display_name=step["name"],
            data=data,
            git=self.git_facts(step["sourceDirectory"]),
            # Not blocked on the launcher's fork and answer (~37 ms a step on a loaded machine):
            # the step's supervisor records its pid when it claims the run.
            wait_for_start=False,
            properties={
                "azureml.runsource": "azureml.StepRun",
                "StepType": step.get("stepType")
                or ("CommandStep" if step.get("command") else "PythonScriptStep"),
            },
        )
        return run.id


def main(argv: list[str]) -> int:
    """``python -m mlws.pipelines.controller WORKSPACE RUN_ID``."""
    return controllers.main(argv, PipelineController, "the pipeline")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
