"""How a run's script is started, on any target: the same environment, command line, process
group and outcome whether the script runs here under the run's supervisor (``compute.local``), on
a Dask worker (``compute.dask``) or on an ``ssh`` host under the agent (``compute.agent``).

- ``script_env``: the variables a script sees (Azure's ``AZUREML_*``, the workspace and run id,
  data paths, the environment's and the run's variables; never the key-vault key);
- ``script_argv``: its command line (the ``command``, or interpreter, script and arguments;
  behind the rank launcher, ``compute.ranks``, for a distributed run);
- ``start_script``: started in its own process group (cancel reaches all it starts), output
  appended to ``logs/driver.log``, mounted inputs read-only, optionally tied to its parent;
- ``exit_outcome``: the exit code as the run's outcome, with the log's last line on failure;
- ``CANCEL_GRACE_S``: how long a canceled script has between SIGTERM and SIGKILL.

The cleanup of the working folder is ``runfolder``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import MlwsError
from ..keyvault import ENV_KEY
from ..processes import die_with_parent, python_path
from . import warmstart

#: Seconds a canceled script has to end after SIGTERM before its process group is killed.
CANCEL_GRACE_S = float(os.environ.get("MLWS_CANCEL_GRACE_S", "10"))


def script_env(
    base: dict[str, str],
    definition: dict[str, Any],
    ws_path: str | os.PathLike[str],
    ws_name: str,
    run_id: str,
    experiment: str,
    run_dir: str | os.PathLike[str],
    user: str | None = None,
) -> dict[str, str]:
    """The environment a run's script sees (locally, on an ``ssh`` host, on a Dask worker):
    this process's, the ``AZUREML_*`` variables v1 scripts read (scope, run, data paths), the
    environment's and the run's own variables (``PYTHONPATH`` ahead of mlws's entries), then
    the run's identity, which nothing overrides. ``user``: the run's submitter, whom what the
    script records names (``MLWS_USER``, :func:`mlws.lifecycle.current_user`)."""

    from ..rundata import PATHS_ENV, absolute_paths, v1_data_variables
    from ..v1 import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION

    env = dict(base)
    env.pop(PATHS_ENV, None)  # a script that submits runs must not hand its own paths on
    env.pop(ENV_KEY, None)  # a run asks for secrets through its channel, never with the key
    if definition.get("dataPaths"):
        env[PATHS_ENV] = json.dumps(absolute_paths(definition, run_dir))
    # Azure's run variables first, so a run's own variables may set them (a v1 script that
    # reads AZUREML_ARM_SUBSCRIPTION gets the subscription its author passes).
    env.update(
        {
            "AZUREML_ARM_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
            "AZUREML_ARM_RESOURCEGROUP": LOCAL_RESOURCE_GROUP,
            # v1's Run.get_context() needs these set; mlws needs no endpoint and no token
            "AZUREML_SERVICE_ENDPOINT": "",
            "AZUREML_RUN_TOKEN": "",
        }
    )
    env.update(v1_data_variables(definition, run_dir))
    own = {
        **(definition["environment"].get("variables") or {}),
        **(definition.get("environmentVariables") or {}),
    }
    env.update(own)
    # The run's own PYTHONPATH is kept, ahead of mlws's entries (mlws, the inherited path,
    # the azureml layer), so its modules win over same-named ones further down.
    inherited = python_path(base.get("PYTHONPATH"))
    env["PYTHONPATH"] = (
        os.pathsep.join([own["PYTHONPATH"], inherited]) if own.get("PYTHONPATH") else inherited
    )
    # MLflow code in the script records into this run (as v1 set it up): the tracking URI of
    # the workspace and the run as MLflow's active run, unless the run's own variables chose
    # another tracking server. Only a local workspace path has an mlws:// URI.
    # The submitter's own MLflow run and experiment (a driver inside a run) are not this run's.
    for name in (
        "MLFLOW_RUN_ID",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_REGISTRY_URI",
    ):
        if name not in own:
            env.pop(name, None)
    if "MLFLOW_TRACKING_URI" not in own and str(ws_path).startswith("/"):
        env["MLFLOW_TRACKING_URI"] = "mlws://" + Path(ws_path).as_posix()
        env.setdefault("MLFLOW_RUN_ID", run_id)
        # The registry is the workspace's too; set, it also spares MLflow a failed `import
        # pyspark` (about a millisecond) in every MlflowClient, i.e. every mlflow.log_metric.
        env.setdefault("MLFLOW_REGISTRY_URI", env["MLFLOW_TRACKING_URI"])
    from ..catalog import FS_KINDS_ENV, known_filesystems

    kinds = known_filesystems()
    if kinds is not None:  # the script need not scan the mount table again
        env[FS_KINDS_ENV] = kinds
    env.update(
        {
            "MLWS_WORKSPACE": str(ws_path),
            "MLWS_RUN_ID": run_id,
            "AZUREML_RUN_ID": run_id,
            "AZUREML_ARM_WORKSPACE_NAME": ws_name,
            "AZUREML_ARM_PROJECT_NAME": experiment,
            "AZUREML_EXPERIMENT_NAME": experiment,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if user:
        from ..lifecycle import USER_ENV

        env[USER_ENV] = user
    return env


def script_argv(definition: dict[str, Any], run_dir: str | os.PathLike[str]) -> list[str]:
    """The run's command line: its ``command``, or the interpreter, script and arguments (data
    placeholders made paths inside ``run_dir``); for a distributed run, the rank launcher
    (:mod:`mlws.compute.ranks`) running that command line once per rank."""
    from ..rundata import expand_argument

    cmd = definition.get("command")
    if cmd:
        if isinstance(cmd, str):  # the shell expands v1's $AZUREML_* from script_env
            argv = ["/bin/sh", "-c", cmd]
        else:
            argv = [expand_argument(c, definition, run_dir) for c in cmd]
            # As in v1's images, `python` in a command is the run's environment's interpreter
            # (a pipeline's ParallelRunStep runs `python -m ...`).
            interpreter = (definition.get("environment") or {}).get("interpreter")
            if argv and argv[0] in ("python", "python3") and interpreter:
                argv[0] = interpreter
    else:
        argv = [
            definition["environment"]["interpreter"],
            definition["script"],
            *(expand_argument(a, definition, run_dir) for a in definition["arguments"]),
        ]
    if definition.get("distributed"):
        from .ranks import launcher_argv

        return launcher_argv(definition["distributed"], argv)
    return argv


def start_script(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    tie_to_parent: bool = False,
    pass_fds: tuple[int, ...] = (),
    read_only: list[str] | None = None,
    warm: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a run's script in its own process group (so cancel reaches everything it
    starts), its output appended to ``logs/driver.log``. ``read_only``: folders of
    ``workdir`` (mounted inputs) the script must not change. ``warm``: the script (or one of
    mlws's own run programs) may be forked from this process (``compute.warmstart``; local
    runs)."""
    from .. import readonly

    preexec = die_with_parent if tie_to_parent else None
    if read_only:
        folders = [workdir / f for f in read_only]
        if readonly.available():
            binds = readonly.preexec(folders)

            def preexec() -> None:
                if tie_to_parent:
                    die_with_parent()
                binds()
        else:
            for f in folders:  # copies (see rundata.prepare): no longer writable
                readonly.strip_write_bits(f)
    if (
        warm
        and not read_only
        and (warmstart.prepared() or prepare_script(argv, workdir, env, tie_to_parent, pass_fds))
    ):
        try:
            forked: Any = warmstart.go()
            return forked  # a ForkedScript: the part of Popen a supervisor uses
        except OSError:
            pass  # its warm child is gone: start it fresh
    warmstart.dismiss()
    with open(workdir / "logs" / "driver.log", "ab") as log:
        try:
            return subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=pass_fds,
            )
        except OSError as e:
            raise MlwsError(f"cannot start {argv[0]}: {e.strerror}") from None


def prepare_script(
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    tie_to_parent: bool = False,
    pass_fds: tuple[int, ...] = (),
) -> bool:
    """Make the script ready to start forked from this process (``compute.warmstart``) when
    it can be; :func:`start_script` with ``warm`` then starts it at once. Whether it was."""
    module = warmstart.warm_module(argv, env)
    path = None if module is not None else warmstart.warm_script(argv, env, workdir)
    if module is None and path is None:
        return False
    try:
        warmstart.prepare(module, argv, workdir, env, tie_to_parent, pass_fds, script=path)
    except OSError:
        return False  # its warm child is gone: start it fresh
    return True


@contextlib.contextmanager
def exit_watch(proc: subprocess.Popen[bytes]) -> Iterator[Callable[[float], int | None]]:
    """``ended(timeout)``: ``proc``'s exit status, or None if it still runs after ``timeout``
    seconds. It wakes the moment the process exits (a pidfd), where ``Popen.wait(timeout)``
    polls with sleeps of up to 50 ms: on a short script that was a quarter of the run's
    overhead. Without pidfds (Linux before 5.3) it is ``Popen.wait``."""
    import select

    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here, or already reaped
        pidfd = None

    def ended(timeout: float) -> int | None:
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
            return proc.poll()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    try:
        yield ended
    finally:
        if pidfd is not None:
            os.close(pidfd)


def exit_outcome(rc: int, log_file: Path | None) -> tuple[str, dict[str, Any] | None]:
    """A script's exit code as the run's outcome, with the reason when it failed."""
    if rc == 0:
        return "Completed", None
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return "Failed", {
            "code": "ProcessKilled",
            "message": f"the script was killed by signal {-rc} ({name})",
        }
    return "Failed", {
        "code": "UserError",
        "message": f"the script exited with code {rc}{last_error_line(log_file)}",
    }


def last_error_line(log_file: Path | None) -> str:
    """The last non-blank line of a script's log (its last 8 KiB), as ``": <line>"`` to end a
    failure message with; ``""`` when there is none."""
    if log_file is None:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [
                ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()
            ]
        return f": {lines[-1]}" if lines else ""
    except OSError:
        return ""
