"""The ``dask`` compute target (Azure's AmlCompute): runs as tasks on a Dask distributed cluster.

Either an existing scheduler (``DaskCompute.attach_configuration("tcp://host:8786")``; its workers
must see the workspace folder at the same path and import mlws), or a cluster mlws starts on this
machine the first time a run needs it (``AmlCompute.provisioning_configuration(min_nodes,
max_nodes)``): a detached ``python -m mlws.compute.dask`` process holding a ``LocalCluster`` with
``adapt(minimum=min_nodes, maximum=max_nodes)``, which shuts down after
``idle_seconds_before_scaledown`` without runs.

A run is one Dask task that owns the script's subprocess (``run_task``): Dask cannot cancel a
running task, so the task itself watches the run's status and kills the script's process group.
The script dies with its worker (PR_SET_PDEATHSIG); the scheduler of a local cluster reruns a
task whose worker died once (``allowed-failures=1``) and gives up the second time, and the run
then fails with that reason.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ComputeTargetException, MlwsError
from . import ComputeConfiguration, ComputeTarget, register_type

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .supervisor import RunSupervisor

START_TIMEOUT_S = 60.0
#: What a process that forks supervisors imports ahead for this target type's runs
#: (:func:`mlws.compute.warm_executors`): the Dask client, 0.5-1.5 s of imports here.
WARM = ("distributed",)


class AmlCompute(ComputeTarget):
    """A ``dask`` target: a local adaptive Dask cluster, or an existing scheduler."""

    _type = "dask"

    @staticmethod
    def provisioning_configuration(
        vm_size: str = "",
        vm_priority: str = "dedicated",
        min_nodes: int = 0,
        max_nodes: int = 4,
        idle_seconds_before_scaledown: int = 1800,
        *_args: Any,
        threads_per_worker: int = 1,
        memory_limit: str | int = "auto",
        **_azure: Any,
    ) -> ComputeConfiguration:
        """A local Dask cluster scaling between ``min_nodes`` and ``max_nodes`` worker
        processes (Azure's VM settings are accepted and ignored).

        :raises ComputeTargetException: invalid node counts.
        """
        del vm_size, vm_priority
        for label, v in (("min_nodes", min_nodes), ("max_nodes", max_nodes)):
            if not isinstance(v, int) or v < 0:
                raise ComputeTargetException(f"{label} must be a whole number >= 0, got {v!r}")
        if max_nodes < 1 or min_nodes > max_nodes:
            raise ComputeTargetException(
                f"need 0 <= min_nodes <= max_nodes and max_nodes >= 1, got min_nodes={min_nodes},"
                f" max_nodes={max_nodes}"
            )
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise ComputeTargetException(
                f"threads_per_worker must be a whole number >= 1, got {threads_per_worker!r}"
            )
        return ComputeConfiguration(
            "dask",
            {
                "minNodes": min_nodes,
                "maxNodes": max_nodes,
                "idleSecondsBeforeScaledown": int(idle_seconds_before_scaledown),
                "threadsPerWorker": threads_per_worker,
                "memoryLimit": memory_limit,
            },
        )

    @staticmethod
    def attach_configuration(scheduler_address: str) -> ComputeConfiguration:
        """An existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``."""
        if not isinstance(scheduler_address, str) or "://" not in scheduler_address:
            raise ComputeTargetException(
                f"scheduler_address must look like tcp://host:8786, got {scheduler_address!r}"
            )
        return ComputeConfiguration("dask", {"scheduler": scheduler_address})

    @classmethod
    def _validate(cls, ws: Workspace, name: str, config: ComputeConfiguration) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ComputeTargetException(
                "the dask compute target needs Dask: pip install 'mlws[dask]'"
            ) from None
        address = config.config.get("scheduler")
        if address:  # attached: the scheduler must answer now, not when the first run waits 30 s
            try:
                Client(address, timeout=5, set_as_default=False).close()
            except (OSError, TimeoutError, ValueError) as e:
                raise ComputeTargetException(
                    f"no Dask scheduler answers at {address}: {e}"
                ) from None

    def nodes(self) -> list[str]:
        info = cluster_info(self.workspace, self.name, self.config)
        return [str(w) for w in info.get("workers", [])] if info else []

    @property
    def scheduler_address(self) -> str | None:
        """The scheduler's address (``tcp://host:port``): the attached one, else that of the cluster
        mlws started for this target, or None while none runs."""
        if self.config.get("scheduler"):
            return str(self.config["scheduler"])
        state = _read_state(self.workspace, self.name)
        return state["address"] if state else None

    def get_status(self) -> str:
        """``Succeeded`` for an attached scheduler; for a cluster mlws starts, ``Running`` while it
        runs, else ``Stopped``. ``.serialize()`` gives v1's details: node counts (workers) and
        scale settings."""
        from . import TargetStatus

        if self.config.get("scheduler"):
            state = "Succeeded"
        else:
            state = "Running" if _read_state(self.workspace, self.name) else "Stopped"
        nodes = self.list_nodes() if state != "Stopped" else []
        running = sum(n["nodeState"] == "running" for n in nodes)
        details: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "allocationState": "Steady",
            "currentNodeCount": len(nodes),
            "targetNodeCount": len(nodes),
            "nodeStateCounts": {
                "idleNodeCount": len(nodes) - running,
                "runningNodeCount": running,
                "preparingNodeCount": 0,
                "unusableNodeCount": 0,
                "leavingNodeCount": 0,
                "preemptedNodeCount": 0,
            },
        }
        if not self.config.get("scheduler"):
            details["scaleSettings"] = {
                "minNodeCount": self.config.get("minNodes", 0),
                "maxNodeCount": self.config.get("maxNodes", 4),
                "nodeIdleTimeBeforeScaleDown": f"PT{self.config.get('idleSecondsBeforeScaledown', 1800)}S",
            }
        return TargetStatus(state, details)

    def list_nodes(self) -> list[dict[str, Any]]:
        """v1's nodes of the cluster: its Dask workers (none while no cluster runs), each with
        ``nodeId`` (the worker's address), ``privateIpAddress``, ``port`` and ``nodeState``
        (``running`` while it runs a task, else ``idle``)."""
        info = cluster_info(self.workspace, self.name, self.config) or {}
        out = []
        for address in info.get("workers", []):
            host, _, port = str(address).split("://")[-1].rpartition(":")
            busy = (info.get("executing") or {}).get(address, 0)
            out.append(
                {
                    "nodeId": str(address),
                    "privateIpAddress": host,
                    "publicIpAddress": None,
                    "port": int(port) if port.isdigit() else None,
                    "nodeState": "running" if busy else "idle",
                }
            )
        return out

    def update(
        self,
        min_nodes: int | None = None,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: int | None = None,
    ) -> None:
        """Change the node range or the idle time (v1) of a cluster mlws starts; a cluster
        running now keeps its settings until it stops (it starts again with the new ones).

        :raises ComputeTargetException: an attached scheduler (it has its own), or invalid
            values (nothing is changed).
        """
        if self.config.get("scheduler"):
            raise ComputeTargetException(
                f"compute target {self.name!r} is an attached Dask scheduler: scale it where it"
                " runs"
            )
        current = self.config
        new = AmlCompute.provisioning_configuration(
            min_nodes=current.get("minNodes", 0) if min_nodes is None else min_nodes,
            max_nodes=current.get("maxNodes", 4) if max_nodes is None else max_nodes,
            idle_seconds_before_scaledown=current.get("idleSecondsBeforeScaledown", 1800)
            if idle_seconds_before_scaledown is None
            else idle_seconds_before_scaledown,
            threads_per_worker=current.get("threadsPerWorker", 1),
            memory_limit=current.get("memoryLimit", "auto"),
        ).config
        config = {**current, **new}
        with self.workspace.catalog.write() as conn:
            conn.execute(
                "UPDATE compute_targets SET config = ? WHERE name = ?",
                (json.dumps(config), self.name),
            )
        self.config = config

    @staticmethod
    def supported_vmsizes(
        workspace: Workspace, location: str | None = None
    ) -> list[dict[str, Any]]:
        """v1's VM sizes a cluster can have: here one, this machine (a local cluster's workers
        share it), in v1's fields (``name``, ``vCPUs``, ``gpus``, ``memoryGB``,
        ``maxResourceVolumeMB``)."""
        import psutil

        return [
            {
                "name": "local",
                "vCPUs": os.cpu_count() or 1,
                "gpus": 0,
                "memoryGB": round(psutil.virtual_memory().total / 2**30, 1),
                "maxResourceVolumeMB": psutil.disk_usage(str(workspace.path)).total // 2**20,
            }
        ]

    def stop(self) -> bool:
        """Stop this machine's local cluster of the target (it starts again on the next run).
        Returns whether one was running.

        :raises ComputeTargetException: runs on the target are active.
        """
        self._refuse_while_active("stop its cluster")
        return stop_cluster(self.workspace, self.name)

    def _release(self) -> None:
        stop_cluster(self.workspace, self.name)


DaskCompute = AmlCompute
register_type("dask", AmlCompute, executor="mlws.compute.dask")


# -- the local cluster ----------------------------------------------------------------------------
def _state_file(ws: Workspace, target: str) -> Path:
    from ..dirs import user_cache_dir

    # Keyed by the workspace folder: a copy of the workspace (same id) must neither use nor
    # stop the original's cluster.
    return user_cache_dir() / "dask" / f"{ws.folder_key}-{target}.json"


def _read_state(ws: Workspace, target: str) -> dict[str, Any] | None:
    """The running cluster's state, or ``None`` when there is none (a stale file is ignored)."""
    from ..processes import process_alive

    try:
        state = json.loads(_state_file(ws, target).read_text())
    except (OSError, ValueError):
        return None
    return state if process_alive(state.get("pid"), state.get("start")) else None


def scheduler_address(ws: Workspace, target: str, config: dict[str, Any]) -> str:
    """The scheduler to send runs to, starting this machine's cluster when it is not running."""
    if config.get("scheduler"):
        return str(config["scheduler"])
    from filelock import FileLock

    state_file = _state_file(ws, target)
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(state_file) + ".lock", timeout=START_TIMEOUT_S * 2):
        state = _read_state(ws, target)
        if state:
            return str(state["address"])
        state_file.unlink(missing_ok=True)
        log_path = state_file.with_suffix(".log")
        from ..keyvault import ENV_KEY
        from ..processes import start_detached

        env = dict(os.environ)
        # Callables run inside the workers: like a run's script, they never get the key.
        env.pop(ENV_KEY, None)
        with open(log_path, "ab") as log:
            # Not reaped by a thread: the loop below polls it.
            proc = start_detached(
                "mlws.compute.dask", str(ws.path), target, env=env, log=log, reap=False
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            state = _read_state(ws, target)
            if state and state.get("pid") == proc.pid:
                return str(state["address"])
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is None:  # its workers too: the cluster process leads its own group
            os.killpg(proc.pid, signal.SIGKILL)
        tail = log_path.read_text(errors="replace")[-2000:].strip().splitlines()
        raise ComputeTargetException(
            f"the local Dask cluster of {target!r} did not start: {tail[-1] if tail else 'no output'}"
            f" (log: {log_path})"
        )


def stop_cluster(ws: Workspace, target: str) -> bool:
    """Stop the local cluster mlws started for ``target`` (SIGTERM, then SIGKILL to its process
    group after 20 s) and forget it. Returns False when none was running."""
    state = _read_state(ws, target)
    if not state:
        return False
    from ..processes import process_alive

    try:
        os.kill(state["pid"], signal.SIGTERM)
    except OSError:
        return False
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process_alive(state["pid"], state["start"]):
        time.sleep(0.05)
    if process_alive(state["pid"], state["start"]):
        os.killpg(state["pid"], signal.SIGKILL)
    _state_file(ws, target).unlink(missing_ok=True)
    return True


def cluster_info(ws: Workspace, target: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """Scheduler address and worker addresses, or ``None`` when no cluster runs."""
    address = config.get("scheduler") or (_read_state(ws, target) or {}).get("address")
    if not address:
        return None
    from distributed import Client

    try:
        with Client(address, timeout=5, set_as_default=False) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
    except (OSError, TimeoutError):
        return None
    executing = {w: (i.get("metrics") or {}).get("executing", 0) for w, i in info.items()}
    return {"address": address, "workers": sorted(info), "executing": executing}


def serve(ws_path: str, target: str) -> int:
    """The detached process holding a target's local cluster (``python -m mlws.compute.dask``)."""
    import dask
    from distributed import LocalCluster

    from ..dirs import write_atomic
    from ..lifecycle import ACTIVE
    from ..processes import process_start_time
    from ..workspace import Workspace
    from . import target_config

    ws = Workspace(ws_path)
    _, config = target_config(ws, target)
    stopping = {"now": False}

    def on_term(_signum: int, _frame: Any) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # A run whose worker died is rerun once; the second death fails it (see module doc).
    dask.config.set({"distributed.scheduler.allowed-failures": 1})
    cluster = LocalCluster(
        n_workers=config.get("minNodes", 0),
        threads_per_worker=config.get("threadsPerWorker", 1),
        memory_limit=config.get("memoryLimit", "auto"),
        processes=True,
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    )
    cluster.adapt(minimum=config.get("minNodes", 0), maximum=config.get("maxNodes", 4))
    me = os.getpid()
    state_file = _state_file(ws, target)
    write_atomic(
        state_file,
        json.dumps(
            {"address": cluster.scheduler_address, "pid": me, "start": process_start_time(me)}
        ).encode(),
    )
    idle_limit = float(config.get("idleSecondsBeforeScaledown", 1800))
    idle_since = time.monotonic()
    marks = ",".join("?" * len(ACTIVE))
    try:
        while not stopping["now"]:
            time.sleep(0.5)
            active = ws.catalog.scalar(
                f"SELECT count(*) FROM runs WHERE target = ? AND status IN ({marks})",
                (target, *ACTIVE),
            )
            if active or cluster.scheduler.tasks:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_limit:
                break
    finally:
        try:
            if json.loads(state_file.read_text()).get("pid") == me:
                state_file.unlink()
        except (OSError, ValueError):
            pass
        cluster.close(timeout=10)
    return 0


# -- runs as tasks --------------------------------------------------------------------------------
def run_task(ws_path: str, run_id: str) -> str:
    """On a Dask worker: run the script of ``run_id`` to its end; returns the final status."""
    from ..workspace import Workspace
    from . import local
    from .supervisor import RunSupervisor

    ws = Workspace(ws_path)
    try:
        sup = RunSupervisor(ws, run_id, claim=False)
        local.execute_here(sup, tie_to_parent=True)
        return str(sup.status())
    finally:
        ws.close()


def execute(sup: RunSupervisor, target: str, config: dict[str, Any]) -> None:
    """In the supervising process: send the run to the cluster and wait for its task."""
    from ..runs import TERMINAL, set_status

    try:
        from distributed import Client
        from distributed.client import FutureCancelledError
    except ImportError:
        raise MlwsError("the dask compute target needs Dask: pip install 'mlws[dask]'") from None
    ws = sup.ws
    address = scheduler_address(ws, target, config)
    with ws.catalog.write() as conn:
        conn.execute(
            "INSERT OR IGNORE INTO run_properties VALUES (?, 'mlws.dask.scheduler', ?)",
            (sup.row["seq"], address),
        )
    client = Client(address, timeout=30, set_as_default=False)
    try:
        future = client.submit(
            run_task, str(ws.path), sup.run_id, key=f"mlws-run-{sup.run_id}", pure=False
        )
        delay = 0.01
        while not future.done():
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
            status = sup.status()
            if status == "CancelRequested" and _still_queued(ws, sup.run_id):
                future.cancel()
                set_status(ws, sup.run_id, "Canceled")
                return
            if status in TERMINAL:
                return
        try:
            future.result()
        except FutureCancelledError:
            if sup.status() == "CancelRequested":
                set_status(ws, sup.run_id, "Canceled")
            else:
                _keep_logs(sup)
                set_status(
                    ws,
                    sup.run_id,
                    "Failed",
                    error={
                        "code": "ClusterLost",
                        "message": f"the Dask cluster at {address} dropped the run's task"
                        " (stopped or restarted while the run was active)",
                    },
                )
        except Exception as e:  # noqa: BLE001 - every way a task can fail ends the run, with why
            sup.kill_recorded_script()
            _keep_logs(sup)
            name = type(e).__name__
            if name == "KilledWorker":
                message = (
                    "the Dask worker running this run died, and so did the one running its"
                    f" retry; Dask gave up ({e})"
                )
                code = "WorkerDied"
            else:
                message = f"the Dask task failed: {name}: {e}"
                code = "SystemError"
            set_status(ws, sup.run_id, "Failed", error={"code": code, "message": message})
    finally:
        client.close()
    if sup.status() not in TERMINAL:
        set_status(
            ws,
            sup.run_id,
            "Failed",
            error={"code": "SystemError", "message": "the Dask task ended without an outcome"},
        )


def _keep_logs(sup: RunSupervisor) -> None:
    """The task died with its worker: store what its working folder on this machine holds
    (the log says how far the script got), then remove the folder."""
    import shutil

    from ..runfolder import run_folder

    workdir = run_folder(sup.ws, sup.run_id)
    if not workdir.is_dir():
        return
    try:
        sup.collect(workdir)
    except Exception:  # noqa: BLE001 - the run fails with its reason either way
        pass
    if not os.environ.get("MLWS_KEEP_WORKDIR"):
        shutil.rmtree(workdir, ignore_errors=True)


def _still_queued(ws: Workspace, run_id: str) -> bool:
    """No attempt has started the script yet (the run never left Queued on a worker)."""
    return ws.catalog.scalar("SELECT pid FROM runs WHERE id = ?", (run_id,)) is None


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m mlws.compute.dask WORKSPACE TARGET", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(sys.argv[1], sys.argv[2]))
