"""v1's ``azureml.core.Workspace``: mlws's :class:`~mlws.workspace.Workspace` with v1's
constructor and factories, where a workspace is named by ``workspace_name`` instead of a folder.

A name maps to a folder as ``.azureml/config.json`` does (:mod:`mlws.workspace`): the folder
recorded when a workspace of that name was created on this machine, else
``<user data>/workspaces/<name>``. Subscription, resource group, ``auth`` and other Azure
arguments are accepted, kept for display (``ws.subscription_id``) and noted once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import workspace as _ws
from ..errors import UserErrorException, WorkspaceNotFound
from . import LOCAL_LOCATION, LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION
from .names import note_cloud_args


def folder_for_name(name: str) -> Path:
    """The folder of the workspace called ``name`` on this machine (it may not exist yet)."""
    known = _ws.named_workspaces()
    if name in known:
        return Path(known[name])
    from ..dirs import user_data_dir

    return user_data_dir() / "workspaces" / name


def _is_v1_name(value: Any) -> bool:
    # A path (Path, "./ws", "~/ws", "/abs", "a/b") means mlws's own API; a bare word is v1's
    # workspace name ("my-workspace"), even where a folder of that name happens to be.
    if not isinstance(value, str):
        return False
    return not (os.sep in value or value.startswith((".", "~")))


def _config_scope(path: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """``(subscription_id, resource_group)`` from the v1 config file ``from_config(path)``
    reads (either of v1's forms), or None when it reads none or names no scope."""
    import json

    if path is None:
        if os.environ.get("MLWS_WORKSPACE"):
            return None  # the variable wins over any config file (mlws.workspace)
        found = _ws.find_config_file(Path.cwd())
    else:
        p = Path(path).expanduser()
        if (p / _ws.IDENTITY_FILE).is_file():
            return None  # a workspace folder itself: no config file is read
        found = p if p.is_file() else _ws.find_config_file(p) if p.is_dir() else None
    try:
        cfg = json.loads(found.read_text()) if found is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    sub, rg = cfg.get("subscription_id"), cfg.get("resource_group")
    scope = cfg.get("Scope")
    if isinstance(scope, str) and not (sub and rg):
        parts = scope.strip("/").split("/")
        pairs = {parts[i].lower(): parts[i + 1] for i in range(0, len(parts) - 1, 2)}
        sub, rg = pairs.get("subscriptions"), pairs.get("resourcegroups")
    if not sub or not rg:
        return None
    return str(sub), str(rg)


class V1Workspace(_ws.Workspace):
    """A workspace, opened v1's way: ``Workspace(subscription_id, resource_group,
    workspace_name, auth=None)`` opens the workspace named ``workspace_name`` (see the module
    docstring), ``Workspace.from_config()`` reads ``.azureml/config.json``; ``Workspace(path)``
    is mlws's own form.

    :raises WorkspaceNotFound: no workspace of that name on this machine.
    """

    #: As given to v1's constructor or ``create``; else the local scope (see :mod:`mlws.v1`),
    #: the same a run's script reads from ``AZUREML_ARM_SUBSCRIPTION``/``_RESOURCEGROUP``.
    subscription_id: str = LOCAL_SUBSCRIPTION
    resource_group: str = LOCAL_RESOURCE_GROUP
    location: str = LOCAL_LOCATION

    def __init__(
        self,
        subscription_id: Any = None,
        resource_group: str | None = None,
        workspace_name: str | None = None,
        auth: Any = None,
        _location: str | None = None,
        _disable_service_check: bool = False,
        _workspace_id: str | None = None,
        sku: str = "basic",
        tags: dict[str, str] | None = None,
        _cloud: str = "AzureCloud",
        *,
        _checking: bool = False,
    ) -> None:
        if workspace_name is None:
            if subscription_id is None:
                raise UserErrorException(
                    "Workspace needs a workspace_name (v1: Workspace(subscription_id,"
                    " resource_group, workspace_name)) or a folder (mlws: Workspace(path))"
                )
            # mlws's own form, also how mlws's factories (create, from_config) open it
            super().__init__(subscription_id, _checking=_checking)
            return
        note_cloud_args(
            "Workspace", subscription_id=subscription_id, resource_group=resource_group, auth=auth
        )
        folder = folder_for_name(workspace_name)
        if not (folder / _ws.IDENTITY_FILE).is_file():
            raise WorkspaceNotFound(
                f"no workspace named {workspace_name!r} on this machine (looked in {folder});"
                f" create it with Workspace.create({workspace_name!r}) or 'mlws workspace create {folder}'"
            )
        super().__init__(folder, _checking=_checking)
        self.subscription_id = str(subscription_id or LOCAL_SUBSCRIPTION)
        self.resource_group = str(resource_group or LOCAL_RESOURCE_GROUP)

    @classmethod
    def from_config(  # type: ignore[override]
        cls,
        path: str | os.PathLike[str] | None = None,
        auth: Any = None,
        _logger: Any = None,
        _file_name: str | None = None,
    ) -> V1Workspace:
        """v1's ``from_config``: the workspace named by ``.azureml/config.json`` in the current
        folder or a parent (or at ``path``); see :meth:`mlws.Workspace.from_config`."""
        note_cloud_args("Workspace.from_config", auth=auth)
        ws = super().from_config(path, _file_name)
        assert isinstance(ws, V1Workspace)
        ws.subscription_id, ws.resource_group = _config_scope(path) or (
            ws.subscription_id,
            ws.resource_group,
        )
        return ws

    @classmethod
    def get(
        cls,
        name: str,
        auth: Any = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        **_azure: Any,
    ) -> V1Workspace:  # type: ignore[override]
        """Open the workspace called ``name`` on this machine (v1 ``Workspace.get``)."""
        return cls(subscription_id, resource_group, name, auth)

    @classmethod
    def create(  # type: ignore[override]
        cls,
        name: Any,
        auth: Any = None,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        location: str | None = None,
        create_resource_group: bool = True,
        sku: str = "basic",
        tags: Any = None,
        friendly_name: str | None = None,
        storage_account: Any = None,
        key_vault: Any = None,
        app_insights: Any = None,
        container_registry: Any = None,
        exist_ok: bool = False,
        show_output: bool = True,
        *,
        _remember_name: bool = True,
        **_azure: Any,
    ) -> V1Workspace:
        """v1's ``Workspace.create(name, ...)``: a workspace called ``name`` in this machine's
        workspaces folder (the Azure arguments are noted once); with a path instead of a name,
        mlws's own :meth:`mlws.Workspace.create`.

        :raises WorkspaceExists: it exists and ``exist_ok`` is false.
        """
        if not _is_v1_name(name):
            # mlws's own call, create(path, name=None, exist_ok=False): the 2nd positional is a name
            ws_name = auth if isinstance(auth, str) else None
            ws = super().create(name, ws_name, exist_ok, _remember_name=_remember_name)
            assert isinstance(ws, V1Workspace)
            return ws
        note_cloud_args(
            "Workspace.create",
            auth=auth,
            subscription_id=subscription_id,
            resource_group=resource_group,
            location=location,
            storage_account=storage_account,
            key_vault=key_vault,
            app_insights=app_insights,
            container_registry=container_registry,
        )
        ws = super().create(folder_for_name(name), name, exist_ok)
        assert isinstance(ws, V1Workspace)
        ws.subscription_id = str(subscription_id or LOCAL_SUBSCRIPTION)
        ws.resource_group = str(resource_group or LOCAL_RESOURCE_GROUP)
        if location:
            ws.location = str(location)
        if show_output:
            print(f"Workspace {name!r} at {ws.path}")
        return ws
