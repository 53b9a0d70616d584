"""Compute targets: named records with a type and settings, used by name from run configs.

Types (a plain dict registry, like joblib's backends): ``local`` (always exists; subprocesses on
this machine), ``ssh`` (Azure's RemoteCompute: one or more hosts reached with the system OpenSSH
client) and ``dask`` (Azure's AmlCompute: a local adaptive Dask cluster, or an existing
scheduler). As in Azure ML v1, ``ComputeTarget(ws, name)`` returns the concrete class
(``RemoteCompute``, ``AmlCompute``, ...) and raises :class:`ComputeTargetException` when the
workspace has no such target.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ComputeTargetException, MlwsError, RunConfigError

if TYPE_CHECKING:
    from ..workspace import Workspace
    from .supervisor import RunSupervisor

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")


class TargetStatus(str):
    """A compute target's status (v1's ``get_status()``): the state string itself (v1 code
    compares it: ``get_status() != "Succeeded"``), whose ``serialize()`` gives v1's details
    (``provisioningState``, and node counts for a cluster)."""

    details: dict[str, Any]

    def __new__(cls, state: str, details: dict[str, Any]) -> TargetStatus:
        status = super().__new__(cls, state)
        status.details = details
        return status

    def serialize(self) -> dict[str, Any]:
        """The status details as JSON-ready data, in v1's field names."""
        return dict(self.details)


def target_config(ws: Workspace, name: str) -> tuple[str, dict[str, Any]]:
    """``(type, config)`` of a compute target. :raises ComputeTargetException: no such target."""
    if ws.remote is not None and name == "local":
        return "local", {}  # a remote workspace's submit runs here (see mlws.remote.submit)
    row = ws.catalog.one("SELECT type, config FROM compute_targets WHERE name = ?", (name,))
    if row is None:
        known = [r[0] for r in ws.catalog.query("SELECT name FROM compute_targets ORDER BY name")]
        raise ComputeTargetException(
            f"no compute target named {name!r} in workspace {ws.name!r}; known targets: {', '.join(known)}"
        )
    return row[0], json.loads(row[1] or "{}")


@dataclass
class ComputeConfiguration:
    """What ``ComputeTarget.create``/``attach`` records: a type and its settings. Built by
    ``AmlCompute.provisioning_configuration``, ``RemoteCompute.attach_configuration``, ...;
    secrets (SSH keys) travel separately and go to the workspace key vault."""

    type: str
    config: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def validate(self, ws: Workspace, name: str) -> None:
        """Check the settings (the type's own checks, e.g. connecting to ssh hosts).

        :raises ComputeTargetException: an unknown type or bad settings.
        """
        cls = _CLASSES.get(self.type)
        if cls is None:
            raise ComputeTargetException(
                f"unknown compute target type {self.type!r}; known: {', '.join(sorted(_CLASSES))}"
            )
        cls._validate(ws, name, self)


class ComputeTarget:
    """A named compute target of a workspace.

    ``ComputeTarget(ws, "name")`` loads it (as its concrete class); ``create``/``attach`` add one;
    ``list`` lists them; ``delete``/``detach`` remove one.
    """

    _type: ClassVar[str] = ""
    #: How many nodes one distributed run may span on targets of this type (``None``: any
    #: number, all of them this machine); see :func:`check_distributed` and
    #: :meth:`max_nodes`.
    max_nodes_per_run: ClassVar[int | None] = 1

    @classmethod
    def max_nodes(cls, config: dict[str, Any]) -> int | None:
        """How many nodes one distributed run may span on a target of this type with the
        recorded ``config`` (``None``: any number)."""
        return cls.max_nodes_per_run

    def __new__(cls, workspace: Workspace | None = None, name: str | None = None, **_kw: Any):
        if workspace is None or name is None:
            return super().__new__(cls)
        kind, _ = target_config(workspace, name)
        sub = _CLASSES.get(kind, ComputeTarget)
        if cls is not ComputeTarget and not issubclass(sub, cls):
            raise ComputeTargetException(
                f"compute target {name!r} is of type {kind!r}, not a {cls.__name__}"
            )
        return super().__new__(sub)

    def __init__(self, workspace: Workspace, name: str, **_kw: Any) -> None:
        self.workspace = workspace
        self.name = name
        kind, config = target_config(workspace, name)
        row = workspace.catalog.one("SELECT created FROM compute_targets WHERE name = ?", (name,))
        self.type = kind
        self.config = config
        self.created = row[0] if row else None
        self.provisioning_state = "Succeeded"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ComputeTarget)
            and other.name == self.name
            and other.workspace.path == self.workspace.path
        )

    def __hash__(self) -> int:
        return hash((str(self.workspace.path), self.name))

    # -- v1 surface ------------------------------------------------------------------------
    def get_status(self) -> str:
        """The target's provisioning state (v1's ``get_status()``): ``Succeeded``, as a target is
        ready once recorded (kinds with a life of their own, such as a Dask cluster, override
        this). A :class:`TargetStatus`: ``.serialize()`` gives v1's details."""
        return TargetStatus(self.provisioning_state, {"provisioningState": self.provisioning_state})

    def wait_for_completion(self, show_output: bool = False, **_kw: Any) -> None:
        """Nothing to wait for: local targets are ready when recorded (a Dask cluster starts
        on the first run that needs it)."""
        if show_output:
            print(f"{self.name}: {self.provisioning_state}")

    def serialize(self) -> dict[str, Any]:
        """The target as JSON-ready data: name, type and its recorded configuration."""
        return {"name": self.name, "type": self.type, "config": self.config}

    def nodes(self) -> list[str]:
        """Where runs of this target go: hosts of an ``ssh`` target, workers of a running Dask
        cluster, this machine for ``local``."""
        return []

    @staticmethod
    def create(
        workspace: Workspace, name: str, provisioning_configuration: ComputeConfiguration
    ) -> ComputeTarget:
        """Record a new target (``AmlCompute.provisioning_configuration(...)``).

        :raises ComputeTargetException: bad name, name taken, or invalid configuration.
        """
        return _add(workspace, name, provisioning_configuration)

    @staticmethod
    def attach(
        workspace: Workspace, name: str, attach_configuration: ComputeConfiguration
    ) -> ComputeTarget:
        """Record an existing machine or cluster (``RemoteCompute.attach_configuration(...)``,
        ``DaskCompute.attach_configuration(...)``); the hosts are checked first."""
        return _add(workspace, name, attach_configuration)

    @staticmethod
    def list(workspace: Workspace) -> list[ComputeTarget]:
        """Every compute target of the workspace, by name, each as its concrete class (v1's
        ``ComputeTarget.list``)."""
        names = [
            r[0] for r in workspace.catalog.query("SELECT name FROM compute_targets ORDER BY name")
        ]
        return [ComputeTarget(workspace, n) for n in names]

    def delete(self) -> None:
        """Remove the target (its stored credentials too). Refused for ``local`` and while
        runs on it are active.

        :raises ComputeTargetException: ``local``, or active runs use it.
        """
        if self.name == "local":
            raise ComputeTargetException("the built-in 'local' compute target cannot be deleted")
        self._refuse_while_active("delete it")
        self._release()
        with self.workspace.catalog.write() as conn:
            conn.execute("DELETE FROM compute_targets WHERE name = ?", (self.name,))
            names = list(self.config.get("secrets") or [])
            conn.execute(f"DELETE FROM secrets WHERE name IN ({','.join('?' * len(names))})", names)

    def detach(self) -> None:
        """Azure's name for removing an attached target: the same as :meth:`delete`."""
        self.delete()

    def _refuse_while_active(self, what: str) -> None:
        from ..lifecycle import ACTIVE

        marks = ",".join("?" * len(ACTIVE))
        active = self.workspace.catalog.scalar(
            f"SELECT count(*) FROM runs WHERE target = ? AND status IN ({marks})",
            (self.name, *ACTIVE),
        )
        if active:
            raise ComputeTargetException(
                f"compute target {self.name!r} has {active} active run(s); cancel them or wait,"
                f" then {what}"
            )

    # -- per type --------------------------------------------------------------------------
    @classmethod
    def _validate(cls, ws: Workspace, name: str, config: ComputeConfiguration) -> None:
        """Check a configuration before it is recorded (types override)."""

    def _release(self) -> None:
        """Free what the target holds on this machine before it is deleted (types override)."""


class LocalCompute(ComputeTarget):
    """The built-in ``local`` target: subprocesses on this machine (see ``compute.local``)."""

    _type = "local"
    # Every "node" of a distributed run is this machine: node_count=2 tries a two-node job here.
    max_nodes_per_run = None

    def nodes(self) -> list[str]:
        import socket

        return [socket.gethostname()]


def check_distributed(ws: Workspace, target: str, layout: dict[str, Any]) -> None:
    """Refuse a distributed run (``layout``: :func:`mlws.distributed.layout`) that a target's
    type cannot run: more nodes than it spreads one run over.

    :raises RunConfigError: too many nodes for the target.
    :raises ComputeTargetException: no such target.
    """

    kind, config = target_config(ws, target)
    limit = _CLASSES.get(kind, ComputeTarget).max_nodes(config)
    if limit is not None and layout["nodeCount"] > limit:
        raise RunConfigError(
            f"compute target {target!r} ({kind}) runs a distributed job's processes on at most"
            f" {limit} node(s), not node_count={layout['nodeCount']}; use node_count={limit}"
            " with more processes per node, or the local target"
        )


def secret_name(target: str, what: str) -> str:
    """The key-vault name of a target's credential (``compute-<target>-<what>``)."""
    return f"compute-{target}-{what}"


def _add(ws: Workspace, name: str, configuration: ComputeConfiguration) -> ComputeTarget:
    import sqlite3

    if not isinstance(configuration, ComputeConfiguration):
        raise ComputeTargetException(
            "expected a configuration from AmlCompute.provisioning_configuration(...),"
            f" RemoteCompute.attach_configuration(...) or DaskCompute.attach_configuration(...),"
            f" got {type(configuration).__name__}"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ComputeTargetException(
            f"invalid compute target name {name!r}: 2-32 letters, digits or '-', starting with a letter (as Azure ML does)"
        )
    if ws.catalog.one("SELECT 1 FROM compute_targets WHERE name = ?", (name,)):
        raise ComputeTargetException(
            f"a compute target named {name!r} already exists; delete it first or pick another name"
        )
    configuration.validate(ws, name)
    stored = {secret_name(name, k): v for k, v in configuration.secrets.items()}
    config = {**configuration.config, "secrets": sorted(stored)}
    # The row first: of two concurrent attaches of one name, the loser stops here, before it
    # could overwrite the winner's key.
    try:
        with ws.catalog.write() as conn:
            conn.execute(
                "INSERT INTO compute_targets (name, type, config, created) VALUES (?, ?, ?, ?)",
                (name, configuration.type, json.dumps(config), time.time()),
            )
    except sqlite3.IntegrityError:
        raise ComputeTargetException(f"a compute target named {name!r} already exists") from None
    if stored:
        try:
            ws.get_default_keyvault().set_secrets(stored)
        except BaseException:
            with ws.catalog.write() as conn:
                conn.execute("DELETE FROM compute_targets WHERE name = ?", (name,))
            raise
    return ComputeTarget(ws, name)


_CLASSES: dict[str, type[ComputeTarget]] = {"local": LocalCompute}
#: Per type, the module whose ``execute(sup, target, config)`` runs a run on that type's
#: targets: a name, imported on first use (a supervisor imports only its own target's).
_EXECUTORS: dict[str, str] = {"local": "mlws.compute.local"}


def register_type(kind: str, cls: type[ComputeTarget], executor: str | None = None) -> None:
    """Make ``kind`` a compute target type, loaded as ``cls`` (the type modules call this).

    ``executor``: the module (``"mlws.compute.sshrun"``) whose ``execute(sup, target, config)``
    runs a submitted run on a target of this type for its supervisor
    (:class:`mlws.compute.supervisor.RunSupervisor`)."""
    _CLASSES[kind] = cls
    if executor is not None:
        _EXECUTORS[kind] = executor


def executor(kind: str) -> Callable[[RunSupervisor, str, dict[str, Any]], None]:
    """The ``execute`` function that runs runs on targets of type ``kind`` (its module imported
    now, on first use).

    :raises ComputeTargetException: the type runs no scripts (or is unknown)."""
    import importlib

    module = _EXECUTORS.get(kind)
    if module is None:
        raise ComputeTargetException(
            f"compute target type {kind!r} cannot run scripts; types that can:"
            f" {', '.join(sorted(_EXECUTORS))}"
        )
    execute: Callable[[RunSupervisor, str, dict[str, Any]], None]
    execute = importlib.import_module(module).execute
    return execute


#: How recent a run on a target type must be for :func:`warm_executors` to warm its executor.
WARM_RECENT_S = 600.0


def warm_executors(workspace: str | os.PathLike[str]) -> list[str]:
    """Import, now, the executor modules of the target types that runs of ``workspace`` were
    submitted to in the last :data:`WARM_RECENT_S`, and the modules each lists in its ``WARM``
    tuple; returns their names. For a process that forks supervisors
    (:mod:`mlws.compute.launcher`): a forked supervisor then finds them imported
    (``distributed`` alone takes 0.5-1.5 s to import here, on every Dask run otherwise), while
    a workspace that only runs locally imports nothing more. Best effort: a workspace that
    cannot be read, or a module that cannot be imported, warms nothing."""
    import importlib

    from ..workspace import Workspace

    try:
        with Workspace(workspace) as ws:
            kinds = [
                r[0]
                for r in ws.catalog.query(
                    "SELECT DISTINCT t.type FROM compute_targets t JOIN runs r"
                    " ON r.target = t.name WHERE r.created > ?",
                    (time.time() - WARM_RECENT_S,),
                )
            ]
    except (MlwsError, OSError):
        return []
    warmed: list[str] = []
    for kind in sorted(set(kinds)):
        module = _EXECUTORS.get(kind)
        if module is None:
            continue
        try:
            names = [module, *getattr(importlib.import_module(module), "WARM", ())]
            for name in names[1:]:
                importlib.import_module(name)
        except ImportError:
            continue  # e.g. a dask target while Dask is not installed: its runs say so
        warmed += names
    return warmed


# The type modules register themselves; importing them is cheap (no ssh, no dask at import).
from .dask import AmlCompute, DaskCompute  # noqa: E402
from .ssh import RemoteCompute  # noqa: E402

__all__ = [
    "AmlCompute",
    "ComputeConfiguration",
    "ComputeTarget",
    "DaskCompute",
    "LocalCompute",
    "RemoteCompute",
    "check_distributed",
    "executor",
    "register_type",
    "warm_executors",
    "target_config",
]
