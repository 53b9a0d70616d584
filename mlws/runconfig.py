"""Run configurations: ``ScriptRunConfig`` and ``RunConfiguration`` (saved as YAML)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from .dirs import write_atomic
from .errors import RunConfigError

if TYPE_CHECKING:
    from .experiments import Experiment
    from .runs import Run
    from .workspace import Workspace

DEFAULT_MAX_RUN_DURATION_S = 2592000  # 30 days, as in v1


class HistoryConfiguration:
    """v1's ``HistoryConfiguration``: with ``output_collection`` False, the run's ``outputs`` folder
    is not stored as run files when it ends (``logs`` always is)."""

    def __init__(self, output_collection: bool = True) -> None:
        self.output_collection = output_collection


class DockerConfiguration:
    """v1's ``DockerConfiguration``: whether the run's script runs in a container. It does
    where a Docker daemon answers (:mod:`mlws.compute.docker`); elsewhere it runs without,
    with a note in its ``logs/driver.log`` saying why."""

    def __init__(
        self,
        use_docker: bool = False,
        shm_size: str | None = None,
        shared_volumes: bool = True,
        arguments: list[str] | None = None,
    ) -> None:
        self.use_docker = bool(use_docker)
        self.shm_size = shm_size
        self.shared_volumes = shared_volumes
        self.arguments = list(arguments or [])

    def to_dict(self) -> dict[str, Any]:
        """The section in v1's field names (``useDocker``, ...)."""
        return {
            "useDocker": self.use_docker,
            "shmSize": self.shm_size,
            "sharedVolumes": self.shared_volumes,
            "arguments": list(self.arguments),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DockerConfiguration:
        """The section stored by :meth:`to_dict`; missing fields take their defaults."""
        data = data or {}
        return cls(
            bool(data.get("useDocker", False)),
            data.get("shmSize"),
            bool(data.get("sharedVolumes", True)),
            data.get("arguments"),
        )


def docker_unreachable() -> str | None:
    """Why no Docker daemon can be used from here (no ``docker`` command, or ``docker info``
    fails), or None when one answers (:func:`mlws.compute.docker.unreachable`)."""
    from .compute.docker import unreachable

    return unreachable()


class RunConfiguration:
    """How to run a script: target, environment, arguments, limits. ``save``/``load`` as YAML,
    to ``.mlws/<name>.yml`` (loads ``.azureml/<name>.runconfig`` too, v1's place)."""

    def __init__(
        self,
        script: str | None = None,
        arguments: list[Any] | None = None,
        framework: str = "Python",
        communicator: str = "None",
        command: list[str] | str | None = None,
        **_azure_kwargs: Any,
    ) -> None:
        self.script = script
        self.arguments: list[Any] = list(arguments or [])
        self.target = "local"
        self.framework = framework
        self.communicator = communicator
        self.node_count = 1
        self.max_run_duration_seconds: int | None = None
        self.environment: Any = None
        self.environment_variables: dict[str, str] = {}
        self.command = command
        self.history = HistoryConfiguration()
        self._distributed: Any = None
        self.docker = DockerConfiguration()

    @property
    def target(self) -> str:
        """The compute target's name (``local`` by default). v1 code also sets a target object
        (``src.run_config.target = cpu_cluster``): its name is kept."""
        return self._target

    @target.setter
    def target(self, value: Any) -> None:
        self._target = value if isinstance(value, str) else getattr(value, "name", str(value))

    @property
    def distributed_job_config(self) -> Any:
        """The distributed job (a :class:`~mlws.distributed.PyTorchConfiguration`,
        ``MpiConfiguration`` or ``TensorflowConfiguration``), or None for one process. Setting
        it sets :attr:`node_count`, :attr:`framework` and :attr:`communicator` as v1 does.

        :raises RunConfigError: not one of those classes, or counts that make no job.
        """
        return self._distributed

    @distributed_job_config.setter
    def distributed_job_config(self, config: Any) -> None:
        from .distributed import communicator, layout

        if config is None:
            self._distributed = None
            self.node_count = 1
            self.framework, self.communicator = "Python", "None"
            return
        layout(config)  # refused before anything changes
        self._distributed = config
        self.node_count = int(config.node_count)
        self.framework, self.communicator = communicator(config)

    def distributed_layout(self) -> dict[str, Any] | None:
        """The ranks to run (:func:`mlws.distributed.layout`), or None for one process.

        :raises RunConfigError: bad counts, or a :attr:`node_count` above 1 that no
            distributed configuration explains (or that differs from the configuration's).
        """
        from .distributed import layout

        nodes = self.node_count
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise RunConfigError(f"node_count must be a whole number >= 1, got {nodes!r}")
        if self._distributed is None:
            if nodes != 1:
                raise RunConfigError(
                    f"node_count={nodes} needs a distributed_job_config (PyTorchConfiguration,"
                    " MpiConfiguration or TensorflowConfiguration) saying how to start the"
                    " processes; set one, or node_count=1"
                )
            return None
        spec = layout(self._distributed)
        if nodes != self._distributed.node_count:
            raise RunConfigError(
                f"node_count={nodes} differs from the distributed_job_config's node_count="
                f"{self._distributed.node_count}; set it on the configuration"
            )
        return spec

    # -- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The configuration as saved (``save``) and recorded in a run's definition, in v1's field
        names; an :class:`Environment` object is stored as its definition."""
        env = self.environment
        if env is not None and not isinstance(env, (str, dict)):
            env = env.to_dict() if hasattr(env, "to_dict") else {"name": getattr(env, "name", None)}
        return {
            "script": self.script,
            "arguments": [str(a) for a in self.arguments],
            "command": self.command,
            "target": self.target,
            "framework": self.framework,
            "communicator": self.communicator,
            "nodeCount": self.node_count,
            "maxRunDurationSeconds": self.max_run_duration_seconds,
            "environment": env,
            "environmentVariables": dict(self.environment_variables),
            "history": {"outputCollection": self.history.output_collection},
            "docker": self.docker.to_dict(),
            **(
                {self._distributed.kind: self._distributed.to_dict()}
                if self._distributed is not None
                else {}
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfiguration:
        """The configuration saved by :meth:`to_dict`; missing fields take their defaults.

        :raises RunConfigError: ``data`` is not a mapping.
        """
        if not isinstance(data, dict):
            raise RunConfigError("a run configuration must be a mapping")
        rc = cls(
            script=data.get("script"),
            arguments=data.get("arguments") or [],
            command=data.get("command"),
        )
        rc.target = data.get("target") or "local"
        rc.framework = data.get("framework") or "Python"
        rc.communicator = data.get("communicator") or "None"
        from .distributed import from_sections

        rc.node_count = int(data.get("nodeCount") or 1)
        rc._distributed = from_sections(data)
        rc.max_run_duration_seconds = data.get("maxRunDurationSeconds")
        rc.environment = data.get("environment")
        rc.environment_variables = dict(data.get("environmentVariables") or {})
        rc.history = HistoryConfiguration(
            bool((data.get("history") or {}).get("outputCollection", True))
        )
        rc.docker = DockerConfiguration.from_dict(data.get("docker"))
        return rc

    def save(
        self,
        path: str | os.PathLike[str] | None = None,
        name: str | None = None,
        separate_environment_yaml: bool = False,
    ) -> Path:
        """Write YAML to ``path`` (a ``.yml``/``.yaml``/``.runconfig`` file), or to
        ``<path or cwd>/.mlws/<name>.yml``."""
        import yaml

        target = _config_path(path, name, for_save=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, name: str | None = None
    ) -> RunConfiguration:
        """Read a run configuration saved by :meth:`save` (or v1's ``.azureml/<name>.runconfig``)."""
        import yaml

        target = _config_path(path, name, for_save=False)
        try:
            data = yaml.safe_load(target.read_text())
        except OSError as e:
            raise RunConfigError(f"cannot read run configuration {target}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise RunConfigError(f"run configuration {target} is not valid YAML: {e}") from None
        return cls.from_dict(data)


def _config_path(path: str | os.PathLike[str] | None, name: str | None, for_save: bool) -> Path:
    p = Path(path) if path is not None else Path.cwd()
    if p.suffix in (".yml", ".yaml", ".runconfig") and not p.is_dir():
        return p
    if not name:
        raise RunConfigError("give a file path ending in .yml/.runconfig, or a folder and a name")
    candidates = [
        p / ".mlws" / f"{name}.yml",
        p / ".azureml" / f"{name}.runconfig",
        p / f"{name}.runconfig",
    ]
    if for_save:
        return candidates[0]
    for c in candidates:
        if c.is_file():
            return c
    raise RunConfigError(
        f"no run configuration named {name!r} under {p} (looked for .mlws/{name}.yml, .azureml/{name}.runconfig)"
    )


class ScriptRunConfig:
    """What to run (a script with arguments, or a command) from which source folder, where.

    :raises RunConfigError: the script path is absolute or escapes ``source_directory``.
    """

    def __init__(
        self,
        source_directory: str | os.PathLike[str] = ".",
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: RunConfiguration | None = None,
        compute_target: Any = None,
        environment: Any = None,
        max_run_duration_seconds: int | None = DEFAULT_MAX_RUN_DURATION_S,
        command: list[str] | str | None = None,
        **_azure_kwargs: Any,
    ) -> None:
        self.source_directory = str(source_directory)
        self.run_config = run_config or RunConfiguration()
        distributed = _azure_kwargs.get("distributed_job_config")
        if distributed is not None:
            # Checked first: a refused configuration leaves a given run_config unchanged.
            from .distributed import layout

            layout(distributed)
        if script is not None:
            self.run_config.script = script
        if arguments is not None:
            self.run_config.arguments = list(arguments)
        if command is not None:
            self.run_config.command = command
        if compute_target is not None:
            self.run_config.target = compute_target
        if environment is not None:
            self.run_config.environment = environment
        if _azure_kwargs.get("docker_runtime_config") is not None:
            self.run_config.docker = _azure_kwargs["docker_runtime_config"]
        if max_run_duration_seconds is not None:
            self.run_config.max_run_duration_seconds = max_run_duration_seconds
        if distributed is not None:
            self.run_config.distributed_job_config = distributed
        if self.script is None and self.command is None:
            raise RunConfigError("ScriptRunConfig needs a script or a command")
        if self.script is not None:
            check_script_path(self.source_directory, self.script)

    @property
    def distributed_job_config(self) -> Any:
        """The distributed job (``run_config.distributed_job_config``), or None."""
        return self.run_config.distributed_job_config

    @property
    def script(self) -> str | None:
        """The script to run, relative to ``source_directory`` (``run_config.script``)."""
        return self.run_config.script

    @property
    def arguments(self) -> list[Any]:
        """The script's arguments (``run_config.arguments``), data inputs and outputs among them."""
        return self.run_config.arguments

    @property
    def command(self) -> list[str] | str | None:
        """The command to run instead of a script (``run_config.command``), or None."""
        return self.run_config.command

    @property
    def compute_target(self) -> str:
        """The name of the compute target (``run_config.target``; ``local`` by default)."""
        return self.run_config.target

    @property
    def environment(self) -> Any:
        """The run's environment (``run_config.environment``): an :class:`Environment`, a name, or
        None for the current Python."""
        return self.run_config.environment

    def validate(self) -> tuple[Path, str | None]:
        """``(absolute source folder, script path inside it)``; raises :class:`RunConfigError`
        when the folder or the script is missing, or the script lies outside the folder."""
        src = Path(self.source_directory).absolute()
        if not src.is_dir():
            raise RunConfigError(f"source directory {src} does not exist or is not a folder")
        if self.script is None:
            return src, None
        script = check_script_path(str(src), self.script).as_posix()
        if not (src / script).is_file():
            raise RunConfigError(f"script {script} not found in source directory {src}")
        return src, script

    def _submit(
        self, experiment: Experiment, tags: dict[str, Any] | None = None, **kwargs: Any
    ) -> Run:
        return submit_script(experiment, self, tags=tags, progress=kwargs.get("progress"))


def check_script_path(source_directory: str, script: str) -> Path:
    """The script's path inside the source folder; refuses absolute paths and escapes."""
    src = Path(source_directory).absolute()
    real_src = os.path.realpath(src)
    sp = PurePath(script)
    if sp.is_absolute():
        try:
            rel = Path(os.path.realpath(sp)).relative_to(real_src)
        except ValueError:
            raise RunConfigError(
                f"script {script} is outside the source directory {src}; move it there or pass a "
                "source_directory that contains it"
            ) from None
        return rel
    full = os.path.realpath(src / sp)
    if full != real_src and not full.startswith(real_src + os.sep):
        raise RunConfigError(
            f"script {script} is outside the source directory {src}; move it there or pass a "
            "source_directory that contains it"
        )
    return Path(os.path.relpath(full, real_src))


def environment_definition(ws: Workspace, env: Any, on_this_machine: bool = True) -> dict[str, Any]:
    """The run definition's environment: the spec, plus the interpreter when it is known now
    (user-managed, run on this machine); a managed one is built where the run runs, while the
    run shows Preparing."""
    from .environments import as_environment, resolve
    from .errors import MlwsError

    given = env
    env = as_environment(ws, env)
    spec = env.to_dict()
    if "docker" not in spec:
        # A v1 environment stored as a dict (a sweep's trials, a saved run configuration) or
        # registered and named keeps its Docker section, which mlws's own Environment lacks.
        stored = given
        if isinstance(given, str) and env.version is not None and ws.remote is None:
            import json

            stored = json.loads(
                ws.catalog.scalar(
                    "SELECT spec FROM environments WHERE name = ? AND version = ?",
                    (env.name, int(env.version)),
                )
                or "{}"
            )
        if isinstance(stored, dict) and stored.get("docker"):
            spec["docker"] = stored["docker"]
    try:
        spec["interpreter"] = None if env.managed or not on_this_machine else resolve(env)
    except MlwsError as e:
        raise RunConfigError(str(e)) from None
    spec["variables"] = {str(k): str(v) for k, v in env.environment_variables.items()}
    spec["managed"] = env.managed
    spec["specHash"] = env.spec_hash() if env.managed else None
    return spec


def run_definition(
    config: ScriptRunConfig,
    script: str | None,
    arguments: list[Any],
    src: Path,
    env: dict[str, Any],
    snap: Any,
    inputs: Any = (),
    outputs: Any = (),
) -> dict[str, Any]:
    """The run definition a submit records (without a distributed layout): what to run, with
    what, and the snapshot's counts."""
    rc = config.run_config
    return {
        "script": script,
        "arguments": arguments,
        "inputs": list(inputs),
        "outputs": list(outputs),
        "command": rc.command,
        "target": rc.target,
        "sourceDirectory": str(src),
        "environment": env,
        "environmentVariables": {str(k): str(v) for k, v in rc.environment_variables.items()},
        "maxRunDurationSeconds": rc.max_run_duration_seconds,
        "outputCollection": rc.history.output_collection,
        "distributed": None,
        "snapshot": {"files": snap.files, "bytes": snap.bytes, "newBytes": snap.new_bytes},
    }


def submit_script(
    experiment: Experiment,
    config: ScriptRunConfig,
    tags: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    parent_id: str | None = None,
    properties: dict[str, Any] | None = None,
    snapshot: Any = None,
    run_type: str | None = None,
    display_name: str | None = None,
    data: list[Any] | None = None,
    wait_for_start: bool = True,
    submitted_by: str | None = None,
    start: bool = True,
    git: dict[str, str] | None = None,
) -> Run:
    """Snapshot, record and start a script run; returns it at once (status ``Queued``).
    ``progress(done, total)``: the snapshot's files as they are read (see ``take_snapshot``).
    ``parent_id``/``properties``: a sweep's trial is a child run with its hyperparameters;
    ``snapshot``: a :class:`~mlws.snapshots.Snapshot` taken already (a sweep's, once for all
    its trials) instead of a new one. ``run_type``: the run's type (default
    ``azureml.scriptrun``; a pipeline's step is ``azureml.StepRun``); ``data``: inputs and
    outputs the script finds by name, not in its arguments (see ``rundata.encode_arguments``).
    ``wait_for_start=False``: a request handed to the workspace's launcher is not waited for
    (the run may still be ``NotStarted``; its supervisor records itself when it claims it).
    ``submitted_by``: the user recorded as its submitter (default: this process's; the
    workspace server gives the token's user, whom the script's records then name too).
    ``start=False``: recorded only (``NotStarted``), for a process that claims it later (a
    sweep's trial workers, ``compute.trials``).
    ``git``: the source folder's git facts (``snapshots.git_properties``) when the caller has
    them already (a controller, once for all its children: ``Controller.git_facts``).

    The run is driven by a detached supervising process (``python -m mlws.compute.supervisor``,
    see :mod:`mlws.compute.supervisor`) in a new session, so it survives the submitter.

    :raises RunConfigError: a bad configuration (nothing is stored then).
    :raises MlwsError: the supervising process could not be started (the run is Failed).
    """
    import json
    import sys

    from .compute import target_config
    from .lifecycle import STEP_RUN
    from .rundata import encode_arguments
    from .runs import SCRIPT_RUN, Run, insert_run, key_values
    from .snapshots import git_properties, take_snapshot

    ws = experiment.workspace
    if ws.remote is not None:
        if parent_id is not None or snapshot is not None or data or run_type or properties:
            from .remote.backend import not_available

            raise not_available("a sweep's, a pipeline's or a data run's submit", ws.remote.url)
        from .remote.submit import submit

        return submit(experiment, config, tags=tags, display_name=display_name)
    rc = config.run_config
    tags = key_values(tags, "tag")  # checked before the snapshot stores anything
    target_type, _ = target_config(ws, rc.target)
    distributed = rc.distributed_layout()
    if distributed is not None:
        from .compute import check_distributed

        check_distributed(ws, rc.target, distributed)
    if snapshot is None:
        src, script = config.validate()
    else:  # taken earlier (a published pipeline's step): the folder may have changed or gone
        src = Path(config.source_directory).absolute()
        script = config.script and check_script_path(str(src), config.script).as_posix()
    arguments, inputs, outputs = encode_arguments(ws, rc.arguments, data or ())
    # An ssh host has its own interpreters: the environment is resolved there.
    env = environment_definition(ws, rc.environment, on_this_machine=target_type != "ssh")
    from .compute.docker import request

    # Where the run executes, its supervisor runs the script in Docker if a daemon answers
    # there, else without, with a note (RunSupervisor.decide_docker).
    docker = request(rc.docker.to_dict(), env.get("docker"))
    if docker is not None and distributed is not None:
        raise RunConfigError(
            "mlws runs no distributed run in Docker: set DockerConfiguration(use_docker=False)"
            " and env.docker.enabled = False, or run one process (no distributed_job_config)"
        )
    snap = snapshot if snapshot is not None else take_snapshot(ws.blobs, src, progress=progress)
    for w in snap.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    definition = run_definition(config, script, arguments, src, env, snap, inputs, outputs)
    definition["distributed"] = distributed
    definition["docker"] = docker
    row = insert_run(
        ws,
        experiment.name,
        run_type=run_type or SCRIPT_RUN,
        status="NotStarted",
        parent_id=parent_id,
        display_name=display_name,
        fields={
            "snapshot": snap.manifest,
            "definition": json.dumps(definition),
            "target": rc.target,
            "environment": env["name"] if env["name"] != "default" else None,
            **({"submitter_user": submitted_by} if submitted_by else {}),
        },
        tags=tags,
        properties={
            "azureml.runsource": "experiment",
            "ContentSnapshotId": snap.manifest,
            **(git_properties(src) if git is None else git),
            **(properties or {}),
        },
    )
    run_id = row["id"]
    if not start:
        return Run(experiment, run_id, _row=row)
    from .compute import launcher

    penv = launcher.submitter_env()

    # A launcher is worth its start only to a workspace that gets submissions in a row: warm
    # one at the second submission within a minute (a lone `mlws run submit` starts none).
    recent = ws.catalog.scalar(
        "SELECT COUNT(*) FROM runs WHERE type IN (?, ?) AND created > ?",
        (SCRIPT_RUN, STEP_RUN, time.time() - 60),
    )
    launcher.start_for_run(
        ws,
        run_id,
        launcher.SUPERVISOR,
        penv,
        warm_up=recent >= 2,
        what="the run",
        wait=wait_for_start,
    )
    row = ws.catalog.one("SELECT * FROM runs WHERE id = ?", (run_id,))
    return Run(experiment, run_id, _row=row)
