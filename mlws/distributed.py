"""Distributed jobs: v1's ``PyTorchConfiguration``, ``MpiConfiguration`` and
``TensorflowConfiguration``, given as ``ScriptRunConfig(distributed_job_config=...)``.

Each says how many processes (ranks) a run's script runs as, on how many nodes. :func:`layout`
turns one into the plain dict recorded in the run's definition (``"distributed"``), which the
rank launcher (:mod:`mlws.compute.ranks`) reads where the run runs: it starts one process per
rank with the environment ``torchrun`` sets (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ...), plus Open MPI's ``OMPI_COMM_WORLD_*`` for MPI jobs and
``TF_CONFIG`` for TensorFlow ones.

Every rank runs as the same run: ``Run.get_context()`` is that run in each of them, so what any
rank logs is kept on it (as in v1, where scripts log from rank 0 only when they want one copy),
on whichever host it runs (:mod:`mlws.compute.sshnodes`). Each rank's output is kept as
``logs/std_log_process_<rank>.txt`` and, under v1's per-process name,
``azureml-logs/70_driver_log_<rank>.txt`` (:func:`v1_rank_logs`: the same stored file).
"""

from __future__ import annotations

import re
from typing import Any

from .errors import RunConfigError

#: A rank's log among a run's files (``mlws.compute.ranks.RANK_LOG`` under ``logs/``) ...
_RANK_LOG = re.compile(r"logs/std_log_process_(\d+)\.txt")
#: ... and the name v1 gave each process's log (AZUREML_V1.md (c)).
V1_RANK_LOG = "azureml-logs/70_driver_log_{rank}.txt"

#: The ``communicator`` v1 records for each kind (``RunConfiguration.communicator``).
MPI_COMMUNICATOR = "IntelMpi"
TF_COMMUNICATOR = "ParameterServer"
#: v1's ``communication_backend`` values (case as v1 writes them; any case is accepted).
PYTORCH_BACKENDS = ("Nccl", "Gloo", "Mpi")


def _whole(name: str, value: Any, least: int) -> int:
    """``value`` as an int >= ``least``, or a one-line :class:`RunConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise RunConfigError(f"{name} must be a whole number >= {least}, got {value!r}")
    return value


class PyTorchConfiguration:
    """A PyTorch distributed job (v1's ``azureml.core.runconfig.PyTorchConfiguration``):
    ``process_count`` processes in all (one per node when None), spread evenly over
    ``node_count`` nodes.

    :param communication_backend: ``"Nccl"``, ``"Gloo"`` or ``"Mpi"``; recorded (and given to
        ranks as ``MLWS_DIST_BACKEND``), the script still calls ``init_process_group`` itself.
    :raises RunConfigError: a count is not a whole number >= 1, ``process_count`` is below
        ``node_count`` or does not divide evenly over the nodes, an unknown backend.
    """

    kind = "pytorch"

    def __init__(
        self,
        communication_backend: str = "Nccl",
        process_count: int | None = None,
        node_count: int = 1,
    ) -> None:
        self.communication_backend = communication_backend
        self.process_count = process_count
        self.node_count = node_count
        layout(self)

    def to_dict(self) -> dict[str, Any]:
        """v1's ``pytorch`` section of a run configuration."""
        return {
            "communicationBackend": self.communication_backend,
            "processCount": self.process_count,
            "nodeCount": self.node_count,
        }

    def __repr__(self) -> str:
        return (
            f"PyTorchConfiguration(communication_backend={self.communication_backend!r},"
            f" process_count={self.process_count!r}, node_count={self.node_count!r})"
        )


class MpiConfiguration:
    """An MPI job (v1's ``azureml.core.runconfig.MpiConfiguration``): ``process_count_per_node``
    processes on each of ``node_count`` nodes. Ranks get Open MPI's ``OMPI_COMM_WORLD_*``
    variables (and the ``torchrun`` ones); no ``mpirun`` is involved.

    :raises RunConfigError: a count is not a whole number >= 1.
    """

    kind = "mpi"

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        self.process_count_per_node = process_count_per_node
        self.node_count = node_count
        layout(self)

    def to_dict(self) -> dict[str, Any]:
        """v1's ``mpi`` section of a run configuration."""
        return {"processCountPerNode": self.process_count_per_node, "nodeCount": self.node_count}

    def __repr__(self) -> str:
        return (
            f"MpiConfiguration(process_count_per_node={self.process_count_per_node!r},"
            f" node_count={self.node_count!r})"
        )


class TensorflowConfiguration:
    """A TensorFlow parameter-server job (v1's ``azureml.core.runconfig.TensorflowConfiguration``):
    ``worker_count`` workers and ``parameter_server_count`` parameter servers, each a process
    with its own ``TF_CONFIG``. The run ends when every worker has ended; parameter servers
    (which serve until stopped) are stopped then.

    :raises RunConfigError: ``worker_count`` below 1 or ``parameter_server_count`` below 0.
    """

    kind = "tensorflow"

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count
        layout(self)

    @property
    def node_count(self) -> int:
        """One node per task, as v1 counts them (workers plus parameter servers)."""
        return int(self.worker_count) + int(self.parameter_server_count)

    def to_dict(self) -> dict[str, Any]:
        """v1's ``tensorflow`` section of a run configuration."""
        return {
            "workerCount": self.worker_count,
            "parameterServerCount": self.parameter_server_count,
        }

    def __repr__(self) -> str:
        return (
            f"TensorflowConfiguration(worker_count={self.worker_count!r},"
            f" parameter_server_count={self.parameter_server_count!r})"
        )


DistributedConfig = PyTorchConfiguration | MpiConfiguration | TensorflowConfiguration
#: v1's run-configuration section name of each kind.
SECTIONS: dict[str, type[Any]] = {
    "pytorch": PyTorchConfiguration,
    "mpi": MpiConfiguration,
    "tensorflow": TensorflowConfiguration,
}


def layout(config: Any) -> dict[str, Any]:
    """The ranks of a distributed configuration, as recorded in a run's definition:
    ``{"kind", "nodeCount", "perNode", "worldSize", "backend"?, "workers"?, "parameterServers"?}``.

    :raises RunConfigError: not one of the three configuration classes, or counts that do not
        make a job (``node_count=0``, fewer processes than nodes, an uneven split).
    """
    if isinstance(config, PyTorchConfiguration):
        nodes = _whole("PyTorchConfiguration node_count", config.node_count, 1)
        backend = config.communication_backend
        if not isinstance(backend, str) or backend.lower() not in {
            b.lower() for b in PYTORCH_BACKENDS
        }:
            raise RunConfigError(
                f"PyTorchConfiguration communication_backend must be one of"
                f" {', '.join(PYTORCH_BACKENDS)}, got {backend!r}"
            )
        total = config.process_count
        if total is None:
            total = nodes  # v1: one process per node unless process_count says otherwise
        total = _whole("PyTorchConfiguration process_count", total, 1)
        if total < nodes:
            raise RunConfigError(
                f"PyTorchConfiguration process_count={total} is less than node_count={nodes}:"
                " every node needs at least one process"
            )
        if total % nodes:
            raise RunConfigError(
                f"PyTorchConfiguration process_count={total} does not split evenly over"
                f" node_count={nodes}; use a multiple of {nodes}"
            )
        return {
            "kind": "pytorch",
            "nodeCount": nodes,
            "perNode": total // nodes,
            "worldSize": total,
            "backend": backend,
        }
    if isinstance(config, MpiConfiguration):
        nodes = _whole("MpiConfiguration node_count", config.node_count, 1)
        per = _whole("MpiConfiguration process_count_per_node", config.process_count_per_node, 1)
        return {"kind": "mpi", "nodeCount": nodes, "perNode": per, "worldSize": nodes * per}
    if isinstance(config, TensorflowConfiguration):
        workers = _whole("TensorflowConfiguration worker_count", config.worker_count, 1)
        ps = _whole(
            "TensorflowConfiguration parameter_server_count", config.parameter_server_count, 0
        )
        # Every task on this machine, one process each (v1 gave each its own node).
        return {
            "kind": "tensorflow",
            "nodeCount": 1,
            "perNode": workers + ps,
            "worldSize": workers + ps,
            "workers": workers,
            "parameterServers": ps,
        }
    raise RunConfigError(
        "distributed_job_config must be a PyTorchConfiguration, MpiConfiguration or"
        f" TensorflowConfiguration (from azureml.core.runconfig or mlws), got"
        f" {type(config).__module__}.{type(config).__qualname__}"
    )


def communicator(config: Any) -> tuple[str, str]:
    """``(framework, communicator)`` v1 records in a run configuration for ``config``."""
    if isinstance(config, PyTorchConfiguration):
        return "PyTorch", str(config.communication_backend)
    if isinstance(config, MpiConfiguration):
        return "Python", MPI_COMMUNICATOR
    return "TensorFlow", TF_COMMUNICATOR


def from_sections(data: dict[str, Any]) -> DistributedConfig | None:
    """The distributed configuration a saved run configuration describes, or None: the section
    (``pytorch``/``mpi``/``tensorflow``) its ``communicator`` selects, as v1 reads it (a v1 file
    carries all three sections, the unused ones with defaults).

    :raises RunConfigError: the selected section holds counts that do not make a job.
    """
    comm = str(data.get("communicator") or "None")
    framework = str(data.get("framework") or "Python")
    if comm.lower() in ("intelmpi", "openmpi", "mpi") and framework != "PyTorch":
        section, kind = data.get("mpi"), "mpi"
    elif comm == TF_COMMUNICATOR:
        section, kind = data.get("tensorflow"), "tensorflow"
    elif framework == "PyTorch" and comm != "None":
        section, kind = data.get("pytorch"), "pytorch"
    else:
        return None
    section = section if isinstance(section, dict) else {}
    if kind == "pytorch":
        return PyTorchConfiguration(
            communication_backend=section.get("communicationBackend") or comm,
            process_count=section.get("processCount"),
            node_count=section.get("nodeCount") or 1,
        )
    if kind == "mpi":
        return MpiConfiguration(
            process_count_per_node=section.get("processCountPerNode") or 1,
            node_count=section.get("nodeCount") or data.get("nodeCount") or 1,
        )
    return TensorflowConfiguration(
        worker_count=section.get("workerCount", 1),
        parameter_server_count=section.get("parameterServerCount", 1),
    )


def v1_rank_logs(entries: list[Any]) -> list[Any]:
    """For a distributed run's stored files (manifest entries): each rank's log again under
    v1's name, :data:`V1_RANK_LOG` (the same blob: nothing is copied)."""
    out = []
    for e in entries:
        m = _RANK_LOG.fullmatch(e.path)
        if m:
            out.append(e.replace(path=V1_RANK_LOG.format(rank=int(m.group(1)))))
    return out
