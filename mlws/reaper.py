"""Ending every process a run's script started, including ones that left its process group.

Cancel and the end of a run kill the script's process group, but a script can start processes
outside it (``Popen(..., start_new_session=True)``, a daemon's double fork). Two nets catch them:

- **Sub-reaper.** The supervising process marks itself a child sub-reaper (Linux
  ``PR_SET_CHILD_SUBREAPER``): a process orphaned anywhere below it is re-parented to it instead
  of to init, so when the script has ended every process it left is still a descendant of the
  supervisor, whatever its session or environment, and :func:`kill_descendants` ends them.
- **Marker.** Every process a script starts inherits its environment, which names the run
  (``MLWS_RUN_ID``) and the workspace folder (``MLWS_WORKSPACE``). When the supervisor itself is
  gone (killed), whoever reconciles the run ends the processes carrying that marker
  (:func:`kill_marked`). A process that scrubbed its environment *and* outlived a killed
  supervisor is the one case neither net catches.

- **Container.** A script run in Docker (``compute.docker``) is a container named after its run
  (:func:`container_name`), which outlives its killed docker client: it is removed by name
  (:func:`remove_container`).

What mlws itself starts detached on a script's behalf (a run's supervisor, a service, a local Dask
cluster: :data:`DETACHED_MODULES`) is not a leftover: each has its own life and is left alone.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .processes import reap_children

if TYPE_CHECKING:
    from .workspace import Workspace

_PR_SET_CHILD_SUBREAPER = 36

#: The label of a run's container naming the workspace folder whose run it is.
WORKSPACE_LABEL = "mlws.workspace"


def become_subreaper() -> bool:
    """Make this process the reaper of orphans below it; returns whether the OS agreed."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        return bool(prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    """Every process's parent, from ``/proc/<pid>/stat`` (a few ms for a few hundred)."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 1:
            out[int(entry.name)] = int(fields[1])
    return out


def descendants(
    pid: int, spare: Iterable[int] = (), parents: dict[int, int] | None = None
) -> list[int]:
    """The processes below ``pid``, except those in ``spare`` and what is below them
    (``parents``: a :func:`_parents` map to reuse)."""
    children: dict[int, list[int]] = {}
    for child, parent in (_parents() if parents is None else parents).items():
        children.setdefault(parent, []).append(child)
    skip = set(spare)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if p in skip or mlws_detached(p):
            continue
        found.append(p)
        todo.extend(children.get(p, []))
    return found


#: The processes mlws itself starts detached, each with a life of its own (a run's supervisor,
#: a service, a local Dask cluster): a script that submits a run or deploys a service started
#: them, but they are not its leftovers.
DETACHED_MODULES = (
    "mlws.runner",
    "mlws.compute.supervisor",
    "mlws.serving.supervisor",
    "mlws.compute.dask",
    "mlws.compute.launcher",  # and the supervisors it forks, which keep its command line
    "mlws.compute.trials",  # a sweep's trial worker (and its zygote server)
)


#: The process name (``/proc/<pid>/comm``) of a script forked warm (``compute.warmstart``) and
#: of what it forks: their command line is their supervisor's.
WARM_SCRIPT_NAME = b"mlws-script"


def mlws_detached(pid: int) -> bool:
    """Whether ``pid`` is one of mlws's own detached processes (``python -m <module>``); not a
    script forked from its supervisor, which keeps the supervisor's command line
    (``compute.warmstart``), nor what it forked."""
    try:
        if Path(f"/proc/{pid}/comm").read_bytes().strip() == WARM_SCRIPT_NAME:
            return False
    except OSError:
        pass
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    for i, a in enumerate(args[:-1]):
        if a == b"-m":
            return args[i + 1].decode(errors="replace") in DETACHED_MODULES
    return False


def has_children(spare: Iterable[int] = ()) -> bool:
    """Whether this process has a child left (reaping those that have exited), other than
    ``spare`` (a trial worker's zygote server, ``compute.trials``). One system call, where a
    walk of ``/proc`` costs 50-90 ms on a loaded sandbox: after the script has ended, a
    sub-reaper with no child has no descendant at all, the usual case."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            break
    spared = set(spare)
    if not spared:
        return True
    children: set[int] = set()
    try:  # each thread's children (an orphan is adopted by any live thread of the reaper)
        for task in os.scandir("/proc/self/task"):
            children.update(int(c) for c in Path(task.path, "children").read_text().split())
    except OSError:
        return True  # no such file (a kernel without it): assume some
    return bool(children - spared)


def _kill(pids: Iterable[int]) -> int:
    n = 0
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
            n += 1
        except OSError:
            pass
    return n


def kill_descendants(spare: Iterable[int] = ()) -> int:
    """SIGKILL every process below this one (the script has ended: what is left is leftovers),
    sparing ``spare`` and their subtrees; repeated until none is left, as one may fork while
    the others are killed. Returns how many were killed."""
    spared = set(spare)
    total = 0
    for _ in range(20):  # a fork bomb must not keep the supervisor here forever
        found = descendants(os.getpid(), spared)
        if not found:
            break
        total += _kill(found)
        reap_children()
    reap_children()
    return total


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def kill_marked(ws_path: str | os.PathLike[str], run_id: str, spare: Iterable[int] = ()) -> int:
    """SIGKILL every process (of this user) whose environment marks it as started by the script
    of ``run_id`` in the workspace at ``ws_path`` (sparing ``spare``). Returns how many."""
    marks = (f"MLWS_RUN_ID={run_id}".encode(), f"MLWS_WORKSPACE={ws_path}".encode())
    spared = set(spare) | {os.getpid()}
    hits = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        env = _environ(int(entry.name)).split(b"\0")
        if all(m in env for m in marks) and not mlws_detached(int(entry.name)):
            hits.append(int(entry.name))
    return _kill(hits)


def recorded_supervisors(ws: Workspace) -> list[int]:
    """Supervising processes of this workspace's active runs: runs a script submitted are not
    its leftovers."""
    from .lifecycle import ACTIVE

    marks = ",".join("?" * len(ACTIVE))
    return [
        int(r[0])
        for r in ws.catalog.query(
            f"SELECT supervisor_pid FROM runs WHERE status IN ({marks})"
            " AND supervisor_pid IS NOT NULL",
            ACTIVE,
        )
    ]


def end_leftovers(
    ws: Workspace, run_id: str, below_me: bool = False, keep: Iterable[int] = ()
) -> int:
    """The script of ``run_id`` has ended (or its supervisor is gone): kill what it left
    running. ``below_me`` (this process is the run's sub-reaper supervisor and the script has
    been waited for): every process below this one, which is everything the script started;
    else the processes carrying the run's marker. ``keep``: children of this process that are
    not the script's (a trial worker's zygote server). Returns how many were killed."""
    if below_me and not has_children(keep):
        return 0
    spare = [p for p in recorded_supervisors(ws) if p != os.getpid()] + list(keep)
    if below_me:
        return kill_descendants(spare)
    # Other runs' supervisors and their scripts are spared: a supervisor started from this
    # run's script carries this run's marker, its script its own run's.
    parents = _parents()
    spare_all = spare + [d for s in spare for d in descendants(s, parents=parents)]
    return kill_marked(ws.path, run_id, spare_all)


def container_name(run_id: str) -> str:
    """The run's container: ``mlws-<run id>`` (characters Docker refuses in a name become
    ``_``), so a cancel, or whoever reconciles a dead supervisor, finds it by name."""
    return "mlws-" + re.sub(r"[^a-zA-Z0-9_.-]", "_", run_id)


def remove_container(name: str, workspace: str | os.PathLike[str] | None = None) -> None:
    """Kill and remove the container ``name`` if it exists; with ``workspace``, only if that
    workspace folder's run made it (its label: a copy of a workspace has the same run ids).
    Best effort: no daemon, no such container and a slow daemon are all ignored."""
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker is None:
        return
    try:
        if workspace is not None:
            found = subprocess.run(
                [
                    docker,
                    "ps",
                    "--all",
                    "--quiet",
                    "--filter",
                    f"name=^{name}$",
                    "--filter",
                    f"label={WORKSPACE_LABEL}={workspace}",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()
            if not found:
                return
        subprocess.run(
            [docker, "rm", "--force", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        pass
